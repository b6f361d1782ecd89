"""The synchronous AIM client and its agent handle (httpx)."""

from __future__ import annotations

import functools
import logging
import uuid
from typing import Any, Callable, Iterable, TypeVar

import httpx

from aim import identity
from aim.client import common
from aim.client.errors import ActionDenied, APIError
from aim.client.keystore import AgentKeyStore, StoredAgentKey

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
Resource = str | Callable[..., str] | None


class AIMClient:
    """A client of one AIM API with one API key (`aim_...`) or access token.

    `data_dir` contains the agent key store (default AIM_DATA_DIR or the platform data directory).
    `retries` is the number of retries after the first attempt on connection errors and 503.
    Use it as a context manager, or call `close()`.
    """

    def __init__(
        self, base_url: str, api_key: str, *, timeout: float = common.DEFAULT_TIMEOUT_S,
        retries: int = common.DEFAULT_RETRIES, data_dir: str | None = None, key_store: AgentKeyStore | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.key_store = key_store or AgentKeyStore.in_data_dir(data_dir)
        self._retries = retries
        common.retry_policy(retries)  # validates `retries` now rather than at the first request
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, transport=transport,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": common.USER_AGENT},
        )

    def __enter__(self) -> "AIMClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                body_factory: common.BodyFactory | None = None) -> Any:
        """Send a request to `/api/v1{path}` with retries and return the decoded JSON (None for 204).

        `body_factory` builds the JSON body for each attempt (signed bodies need a fresh nonce).
        Raises APIError for a 4xx or 5xx response and httpx.TransportError when every attempt failed.
        """
        try:
            for attempt in common.retry_policy(self._retries):
                with attempt:
                    body = body_factory() if body_factory is not None else json
                    response = self._http.request(method, common.API_PREFIX + path, json=body, params=params)
                    if response.status_code == 503:
                        raise common.RetryableStatus(response)
        except common.RetryableStatus as exhausted:
            response = exhausted.response
        return common.decode(response)

    # --- agents ---------------------------------------------------------------------------------

    def register_agent(
        self, name: str, *, agent_type: str = "generic", description: str = "", capabilities: Iterable[str] = (),
        metadata: dict[str, Any] | None = None,
    ) -> "Agent":
        """Register an agent with a key pair generated here; only the public key is sent.

        The private key is saved in the key store before this returns the agent handle.
        """
        pair = identity.generate_keypair()
        body = {"name": name, "agent_type": agent_type, "description": description,
                "public_key": pair.public_key_base64(), "capabilities": list(capabilities), "metadata": metadata or {}}
        created = self.request("POST", "/agents", json=body)
        agent = created["agent"]
        stored = StoredAgentKey(uuid.UUID(agent["id"]), agent["name"], agent["key_id"], self.base_url,
                                pair.private_key_pem())
        self.key_store.put(stored)
        logger.info("registered agent %s (%s) with key %s", agent["id"], agent["name"], agent["key_id"])
        return Agent(self, stored)

    def agent(self, agent: uuid.UUID | str) -> "Agent":
        """Return the handle of an agent, by id or name, whose private key is in the key store.

        Raises KeyStoreError when the store has no such agent (see `AgentKeyStore.get`).
        """
        return Agent(self, self.key_store.get(agent))

    def get_agent(self, agent_id: uuid.UUID | str) -> dict[str, Any]:
        return self.request("GET", f"/agents/{agent_id}")

    def list_agents(self, **filters: Any) -> dict[str, Any]:
        """Fetch one page of agents. `filters` are the query parameters of GET /api/v1/agents (cursor, limit, status...)."""
        return self.request("GET", "/agents", params=filters)

    def find_mcp_server(self, url: str) -> dict[str, Any] | None:
        """Return the MCP server registered at `url`, or None."""
        items = self.request("GET", "/mcp-servers", params={"url": url})["items"]
        return items[0] if items else None

    def register_mcp_server(self, name: str, url: str, **fields: Any) -> dict[str, Any]:
        return self.request("POST", "/mcp-servers", json={"name": name, "url": url, **fields})


class Agent:
    """An agent whose private key this process holds: signs and sends verifications and attestations."""

    def __init__(self, client: AIMClient, key: StoredAgentKey) -> None:
        self.client = client
        self.id = key.agent_id
        self.name = key.name
        self.key_id = key.key_id
        self._private_key = identity.load_private_key(key.private_key_pem)

    def __repr__(self) -> str:
        return f"Agent(id={self.id}, name={self.name!r}, key_id={self.key_id!r})"

    def verify(self, action: str, resource: str = "", context: dict[str, Any] | None = None) -> common.VerificationResult:
        """Ask AIM whether this agent may do `action` on `resource` now. A denial is a result, not an error."""
        body = self.client.request(
            "POST", f"/agents/{self.id}/verify",
            body_factory=lambda: common.signed_verification(self.id, self.key_id, self._private_key, action, resource,
                                                            context),
        )
        return common.VerificationResult.from_json(body)

    def perform_action(self, action: str, resource: Resource = None,
                       context: dict[str, Any] | None = None) -> Callable[[F], F]:
        """Decorate a function so each call is verified first; a denial raises ActionDenied and skips the call.

        `resource` is a string, or a function of the call's arguments that returns one.
        """

        def decorate(function: F) -> F:
            @functools.wraps(function)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                target = resource(*args, **kwargs) if callable(resource) else (resource or "")
                result = self.verify(action, target, context)
                if not result.allowed:
                    raise ActionDenied(action, result.reason, result.detail, result.verification_id)
                return function(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return decorate

    def attest_mcp(self, url_or_id: str | uuid.UUID, capabilities_found: Iterable[str],
                   latency_ms: float | None = None, healthy: bool = True) -> dict[str, Any]:
        """Send a signed attestation of an MCP server, named by id or by its registered URL."""
        server_id = common.as_server_id(url_or_id)
        if server_id is None:
            server = self.client.find_mcp_server(str(url_or_id))
            if server is None:
                raise APIError(404, "Not found", f"no MCP server is registered at {url_or_id}; register it first")
            server_id = server["id"]
        found = list(capabilities_found)
        return self.client.request(
            "POST", f"/mcp-servers/{server_id}/attest",
            body_factory=lambda: common.signed_attestation(self.id, self.key_id, self._private_key, server_id, found,
                                                           latency_ms, healthy),
        )

    def request_capability(self, capability: str, justification: str = "") -> dict[str, Any]:
        """File a capability request for an admin or analyst to decide."""
        return self.client.request("POST", f"/agents/{self.id}/capability-requests",
                                 json={"capability": capability, "justification": justification})
