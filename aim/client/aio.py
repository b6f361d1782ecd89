"""The asynchronous AIM client and its agent handle (httpx.AsyncClient). Same API as `aim.client.sync`, awaited."""

from __future__ import annotations

import functools
import inspect
import logging
import uuid
from typing import Any, Awaitable, Callable, Iterable, TypeVar

import anyio.to_thread
import httpx

from aim import identity
from aim.client import common
from aim.client.errors import ActionDenied, APIError
from aim.client.keystore import AgentKeyStore, StoredAgentKey

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
Resource = str | Callable[..., str] | None


class AsyncAIMClient:
    """The async counterpart of `AIMClient`; use it with `async with` or call `aclose()`."""

    def __init__(
        self, base_url: str, api_key: str, *, timeout: float = common.DEFAULT_TIMEOUT_S,
        retries: int = common.DEFAULT_RETRIES, data_dir: str | None = None, key_store: AgentKeyStore | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.key_store = key_store or AgentKeyStore.in_data_dir(data_dir)
        self._retries = retries
        common.retry_policy(retries, asynchronous=True)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, transport=transport,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": common.USER_AGENT},
        )

    async def __aenter__(self) -> "AsyncAIMClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                      body_factory: common.BodyFactory | None = None) -> Any:
        """Send a request to `/api/v1{path}` with retries; see `AIMClient.request`."""
        try:
            async for attempt in common.retry_policy(self._retries, asynchronous=True):
                with attempt:
                    body = body_factory() if body_factory is not None else json
                    response = await self._http.request(method, common.API_PREFIX + path, json=body, params=params)
                    if response.status_code == 503:
                        raise common.RetryableStatus(response)
        except common.RetryableStatus as exhausted:
            response = exhausted.response
        return common.decode(response)

    async def register_agent(
        self, name: str, *, agent_type: str = "generic", description: str = "", capabilities: Iterable[str] = (),
        metadata: dict[str, Any] | None = None,
    ) -> "AsyncAgent":
        """Register an agent with a key pair generated here; only the public key is sent."""
        pair = identity.generate_keypair()
        body = {"name": name, "agent_type": agent_type, "description": description,
                "public_key": pair.public_key_base64(), "capabilities": list(capabilities), "metadata": metadata or {}}
        agent = (await self.request("POST", "/agents", json=body))["agent"]
        stored = StoredAgentKey(uuid.UUID(agent["id"]), agent["name"], agent["key_id"], self.base_url,
                                pair.private_key_pem())
        # The key store takes a file lock and fsyncs, so it runs off the event loop.
        await anyio.to_thread.run_sync(self.key_store.put, stored)
        logger.info("registered agent %s (%s) with key %s", agent["id"], agent["name"], agent["key_id"])
        return AsyncAgent(self, stored)

    async def agent(self, agent: uuid.UUID | str) -> "AsyncAgent":
        """Return the handle of an agent, by id or name, whose private key is in the key store."""
        return AsyncAgent(self, await anyio.to_thread.run_sync(self.key_store.get, agent))

    async def get_agent(self, agent_id: uuid.UUID | str) -> dict[str, Any]:
        return await self.request("GET", f"/agents/{agent_id}")

    async def list_agents(self, **filters: Any) -> dict[str, Any]:
        return await self.request("GET", "/agents", params=filters)

    async def find_mcp_server(self, url: str) -> dict[str, Any] | None:
        items = (await self.request("GET", "/mcp-servers", params={"url": url}))["items"]
        return items[0] if items else None

    async def register_mcp_server(self, name: str, url: str, **fields: Any) -> dict[str, Any]:
        return await self.request("POST", "/mcp-servers", json={"name": name, "url": url, **fields})


class AsyncAgent:
    """The async counterpart of `Agent`."""

    def __init__(self, client: AsyncAIMClient, key: StoredAgentKey) -> None:
        self.client = client
        self.id = key.agent_id
        self.name = key.name
        self.key_id = key.key_id
        self._private_key = identity.load_private_key(key.private_key_pem)

    def __repr__(self) -> str:
        return f"AsyncAgent(id={self.id}, name={self.name!r}, key_id={self.key_id!r})"

    async def verify(self, action: str, resource: str = "",
                     context: dict[str, Any] | None = None) -> common.VerificationResult:
        body = await self.client.request(
            "POST", f"/agents/{self.id}/verify",
            body_factory=lambda: common.signed_verification(self.id, self.key_id, self._private_key, action, resource,
                                                            context),
        )
        return common.VerificationResult.from_json(body)

    def perform_action(self, action: str, resource: Resource = None,
                       context: dict[str, Any] | None = None) -> Callable[[F], F]:
        """Decorate a coroutine function so each call is verified first; a denial raises ActionDenied."""

        def decorate(function: F) -> F:
            if not inspect.iscoroutinefunction(function):
                raise TypeError(f"{function.__qualname__} is not a coroutine function; use Agent.perform_action "
                                "from the sync client for plain functions")

            @functools.wraps(function)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                target = resource(*args, **kwargs) if callable(resource) else (resource or "")
                result = await self.verify(action, target, context)
                if not result.allowed:
                    raise ActionDenied(action, result.reason, result.detail, result.verification_id)
                return await function(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return decorate

    async def attest_mcp(self, url_or_id: str | uuid.UUID, capabilities_found: Iterable[str],
                         latency_ms: float | None = None, healthy: bool = True) -> dict[str, Any]:
        server_id = common.as_server_id(url_or_id)
        if server_id is None:
            server = await self.client.find_mcp_server(str(url_or_id))
            if server is None:
                raise APIError(404, "Not found", f"no MCP server is registered at {url_or_id}; register it first")
            server_id = server["id"]
        found = list(capabilities_found)
        return await self.client.request(
            "POST", f"/mcp-servers/{server_id}/attest",
            body_factory=lambda: common.signed_attestation(self.id, self.key_id, self._private_key, server_id, found,
                                                           latency_ms, healthy),
        )

    async def request_capability(self, capability: str, justification: str = "") -> dict[str, Any]:
        return await self.client.request("POST", f"/agents/{self.id}/capability-requests",
                                         json={"capability": capability, "justification": justification})
