"""Python client for AIM agents (httpx).

    with AIMClient("http://127.0.0.1:8080", api_key) as client:
        agent = client.register_agent("billing-bot", capabilities=["db:read"])

        @agent.perform_action("db:read", resource="invoices")
        def read_invoices(): ...

The key pair is generated locally, and only the public key leaves the process. The private key is
kept in a 0600 key store under the data directory. `AsyncAIMClient` offers the same calls to await.
"""

from aim.client.aio import AsyncAgent, AsyncAIMClient
from aim.client.common import VerificationResult
from aim.client.errors import ActionDenied, AIMClientError, APIError, KeyStoreError
from aim.client.keystore import AgentKeyStore, StoredAgentKey
from aim.client.sync import Agent, AIMClient

__all__ = [
    "AIMClient",
    "AIMClientError",
    "APIError",
    "ActionDenied",
    "Agent",
    "AgentKeyStore",
    "AsyncAIMClient",
    "AsyncAgent",
    "KeyStoreError",
    "StoredAgentKey",
    "VerificationResult",
]
