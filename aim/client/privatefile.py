"""JSON files that hold private keys: readable only by their owner, replaced atomically.

Both the agent client's key store and the simulator's key store use these, each with its own
error class, so that a caller sees the error type of the store it called.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


def read_private_json(path: Path, error: type[Exception]) -> Any | None:
    """Return the JSON document in `path`, or None when the file does not exist.

    Raise `error` when the file cannot be opened, is not a regular file, is readable by the group
    or others, or is not valid JSON. A symbolic link at `path` is not followed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise error(f"cannot open key store {path}: {exc.strerror}") from None
    with os.fdopen(fd, "r", encoding="utf-8") as handle:
        # The mode is checked on the open descriptor, so a swap of the file after the check
        # cannot slip a readable file past it.
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise error(f"key store {path} is not a regular file; expected a JSON file")
        if info.st_mode & 0o077:
            raise error(
                f"key store {path} has mode {stat.S_IMODE(info.st_mode):04o}, so other users may read its "
                f"private keys; expected mode 0600 (run: chmod 600 {path})"
            )
        try:
            return json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise error(f"key store {path} is not valid JSON: {exc}") from None


def ensure_private_directory(directory: Path) -> None:
    """Create `directory` and its parents with mode 0700 when it does not exist; leave an existing one alone."""
    if not directory.exists():
        directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)


def write_private_json(path: Path, document: Any) -> None:
    """Replace `path` with `document` as JSON, with mode 0600, atomically and synced to disk.

    The directory is created with mode 0700 when missing.
    """
    directory = path.parent
    ensure_private_directory(directory)
    # mkstemp creates the file with mode 0600 before any key is written into it.
    fd, temporary = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            json.dump(document, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
