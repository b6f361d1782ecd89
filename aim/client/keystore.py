"""The client's agent key store: private keys of agents registered through the client, in one JSON file.

AIM never receives these keys, because the client generates each key pair locally and sends only
the public key. The file is `<data dir>/client/agent_keys.json` with mode 0600 in a 0700 directory. Reading a
file that the group or others may read raises `KeyStoreError`, as OpenSSH does for private keys.
Writes go to a temporary file created with mode 0600 that then replaces the store, under a file
lock, so concurrent processes never lose each other's keys.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import filelock
import platformdirs

from aim.client.errors import KeyStoreError
from aim.client.privatefile import ensure_private_directory, read_private_json, write_private_json

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
FILE_NAME = "agent_keys.json"


def default_data_dir() -> Path:
    """AIM_DATA_DIR when set, else the platform's user data directory for `aim` (as the server uses)."""
    configured = os.environ.get("AIM_DATA_DIR", "").strip()
    return Path(configured).expanduser() if configured else Path(platformdirs.user_data_dir("aim"))


@dataclass(frozen=True)
class StoredAgentKey:
    """One agent's entry. The private key is PKCS#8 PEM."""

    agent_id: uuid.UUID
    name: str
    key_id: str
    base_url: str
    private_key_pem: str

    def __repr__(self) -> str:  # keeps the private key out of logs and tracebacks
        return f"StoredAgentKey(agent_id={self.agent_id}, name={self.name!r}, key_id={self.key_id!r})"


class AgentKeyStore:
    """Private keys of agents by id, persisted in `path`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = filelock.FileLock(str(self.path) + ".lock")

    @classmethod
    def in_data_dir(cls, data_dir: Path | None = None) -> "AgentKeyStore":
        return cls(Path(data_dir or default_data_dir()) / "client" / FILE_NAME)

    def get(self, agent: uuid.UUID | str) -> StoredAgentKey:
        """Return the stored key of an agent given by id or by name, or raise KeyStoreError.

        A name matches the name the agent was registered with. It must match exactly one stored key;
        agents of the same name registered against several AIM servers need their id.
        """
        keys = self.load()
        try:
            agent_id = uuid.UUID(str(agent))
        except ValueError:
            agent_id = None
        if agent_id is not None:
            key = keys.get(agent_id)
            if key is None:
                raise KeyStoreError(f"key store {self.path} has no key for agent {agent_id}; register the agent "
                                    "with this client or its data directory")
            return key
        named = [key for key in keys.values() if key.name == agent]
        if not named:
            raise KeyStoreError(f"key store {self.path} has no agent named {agent!r}; expected the name or UUID of "
                                "an agent registered with this client or its data directory")
        if len(named) > 1:
            ids = ", ".join(str(key.agent_id) for key in named)
            raise KeyStoreError(f"key store {self.path} has {len(named)} agents named {agent!r} ({ids}); "
                                "pass the agent's UUID instead")
        return named[0]

    def put(self, key: StoredAgentKey) -> None:
        """Add or replace one agent's key, keeping every other entry."""
        ensure_private_directory(self.path.parent)
        with self._lock:
            keys = self.load()
            keys[key.agent_id] = key
            self._save(keys)
        logger.info("stored the private key of agent %s (%s) in %s", key.agent_id, key.key_id, self.path)

    def load(self) -> dict[uuid.UUID, StoredAgentKey]:
        """Return every stored key; an absent file is an empty store.

        Raise KeyStoreError when the file is readable by the group or others, is not a regular file,
        or is not a key store.
        """
        document = read_private_json(self.path, KeyStoreError)
        if document is None:
            return {}
        return self._parse(document)

    def _parse(self, document: object) -> dict[uuid.UUID, StoredAgentKey]:
        if not isinstance(document, dict) or document.get("format") != FORMAT_VERSION:
            raise KeyStoreError(f"{self.path} is not a format {FORMAT_VERSION} AIM client key store")
        entries = document.get("agents")
        if not isinstance(entries, dict):
            raise KeyStoreError(f"key store {self.path} has no 'agents' object")
        keys: dict[uuid.UUID, StoredAgentKey] = {}
        for agent_id, entry in entries.items():
            try:
                key = StoredAgentKey(uuid.UUID(agent_id), str(entry["name"]), str(entry["key_id"]),
                                     str(entry["base_url"]), str(entry["private_key_pem"]))
            except (KeyError, TypeError, ValueError):
                raise KeyStoreError(f"key store {self.path} has a malformed entry for agent {agent_id!r}") from None
            keys[key.agent_id] = key
        return keys

    def _save(self, keys: dict[uuid.UUID, StoredAgentKey]) -> None:
        document = {
            "format": FORMAT_VERSION,
            "saved_at": datetime.now(timezone.utc).isoformat(),
            "agents": {
                str(key.agent_id): {"name": key.name, "key_id": key.key_id, "base_url": key.base_url,
                                    "private_key_pem": key.private_key_pem}
                for key in sorted(keys.values(), key=lambda k: str(k.agent_id))
            },
        }
        write_private_json(self.path, document)
