"""The simulator's key store: the private keys of its agents, in one JSON file per organization.

AIM shows a generated private key once and never stores it, so the simulator keeps the keys itself
to sign requests in later runs, including runs in another process. The file lives at
`<data dir>/simulator/<organization>.json` with mode 0600 in a 0700 directory. Reading a file that
the group or others may read raises `KeyStoreError`, as OpenSSH does for private keys, because the
keys in it are real credentials for the agents it names.

Writes go to a temporary file created with mode 0600, which then replaces the store, and a file lock
serialises read-modify-write cycles of concurrent simulator processes.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import filelock

from aim.client.privatefile import ensure_private_directory, read_private_json, write_private_json
from aim.errors import AIMError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class KeyStoreError(AIMError):
    """The key store file is unsafe to read (mode), unreadable or malformed."""


@dataclass(frozen=True)
class StoredKey:
    """One agent's entry: its name, type and current key, with the private key as PKCS#8 PEM."""

    agent_id: uuid.UUID
    name: str
    agent_type: str
    key_id: str
    private_key_pem: str = field(default="", repr=False)  # kept out of logs and tracebacks


def store_path(data_dir: Path, organization: str) -> Path:
    """Return the key store path for `organization` under `data_dir`.

    A name made of letters, digits, '.', '_' and '-' is used as the file name. Any other name is
    reduced to those characters and suffixed with a hash, so it cannot escape the directory.
    """
    if _SAFE_NAME.match(organization) and organization not in (".", ".."):
        file_name = organization
    else:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", organization).strip(".-")[:60] or "org"
        digest = hashlib.sha256(organization.encode()).hexdigest()[:12]
        file_name = f"{slug}-{digest}"
    return Path(data_dir) / "simulator" / f"{file_name}.json"


class KeyStore:
    """Private keys of the simulated agents of one organization, persisted in `path`."""

    def __init__(self, path: Path, organization: str) -> None:
        self.path = Path(path)
        self.organization = organization
        self._lock = filelock.FileLock(str(self.path) + ".lock")

    @classmethod
    def for_organization(cls, data_dir: Path, organization: str) -> "KeyStore":
        return cls(store_path(data_dir, organization), organization)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's file lock, so a read-modify-write cycle does not lose another process's keys."""
        ensure_private_directory(self.path.parent)
        with self._lock:
            yield

    def load(self) -> dict[uuid.UUID, StoredKey]:
        """Return the stored keys by agent id; an absent file is an empty store.

        Raise KeyStoreError when the file is readable by the group or others, is not a regular file,
        or does not contain a key store of this organization.
        """
        document = read_private_json(self.path, KeyStoreError)
        if document is None:
            return {}
        return self._parse(document)

    def _parse(self, document: object) -> dict[uuid.UUID, StoredKey]:
        if not isinstance(document, dict) or document.get("format") != FORMAT_VERSION:
            raise KeyStoreError(f"key store {self.path} is not a format {FORMAT_VERSION} simulator key store")
        if document.get("organization") != self.organization:
            raise KeyStoreError(
                f"key store {self.path} belongs to organization {document.get('organization')!r}; "
                f"expected {self.organization!r}"
            )
        entries = document.get("agents")
        if not isinstance(entries, dict):
            raise KeyStoreError(f"key store {self.path} has no 'agents' object")
        keys: dict[uuid.UUID, StoredKey] = {}
        for agent_id, entry in entries.items():
            try:
                key = StoredKey(
                    uuid.UUID(agent_id), str(entry["name"]), str(entry["agent_type"]), str(entry["key_id"]),
                    str(entry["private_key_pem"]),
                )
            except (KeyError, TypeError, ValueError):
                raise KeyStoreError(f"key store {self.path} has a malformed entry for agent {agent_id!r}") from None
            keys[key.agent_id] = key
        return keys

    def save(self, keys: dict[uuid.UUID, StoredKey]) -> None:
        """Replace the stored keys with `keys`, atomically and with mode 0600."""
        ensure_private_directory(self.path.parent)
        document = {
            "format": FORMAT_VERSION,
            "organization": self.organization,
            "agents": {
                str(key.agent_id): {
                    "name": key.name, "agent_type": key.agent_type, "key_id": key.key_id,
                    "private_key_pem": key.private_key_pem,
                }
                for key in sorted(keys.values(), key=lambda k: k.name)
            },
        }
        write_private_json(self.path, document)
        logger.info("key store %s saved with %d agent keys", self.path, len(keys))
