"""Private files: everything the station writes is readable by its owner only (0600 files in 0700 folders).

The database and its WAL, pair records (they hold the host's private key and each iPad's escrow bag), the host keys,
the supervision identity, exports and a rewritten configuration. Files and folders that already exist with looser
modes are tightened, as long as this user owns them; a folder other users share (sticky, like /tmp), the home folder
and / are never changed.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def private_folder(path: Path) -> Path:
    """Create `path` and its missing parents as 0700, or tighten it to 0700 when it exists."""
    missing = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        folder.mkdir(mode=FOLDER_MODE, exist_ok=True)
    if not missing:
        _tighten(path, FOLDER_MODE)
    return path


def private_file(path: Path) -> None:
    """Create `path` empty as 0600 if it is missing, else tighten it to 0600 (its content is kept)."""
    descriptor = os.open(path, os.O_CREAT | os.O_WRONLY, FILE_MODE)
    try:
        if _ours(os.fstat(descriptor)):
            os.fchmod(descriptor, stat.S_IMODE(os.fstat(descriptor).st_mode) & ~0o077)
    finally:
        os.close(descriptor)


def tighten(path: Path) -> None:
    """Take group and other permissions away from an existing file (a missing one is fine)."""
    _tighten(path, FILE_MODE)


def write_private_file(path: Path, data: bytes, force: bool = False) -> None:
    """Write `data` to `path` atomically and readable by its owner only (0600 from creation): a `.tmp` file beside it
    is written, synced and renamed over `path`, which is replaced only if `force`."""
    if path.exists() and not force:
        raise FileExistsError(path)
    if not path.parent.exists():
        private_folder(path.parent)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _tighten(path: Path, mode: int) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if stat.S_IMODE(info.st_mode) & 0o077 == 0 or not _ours(info) or _shared(path, info):
        return
    path.chmod(stat.S_IMODE(info.st_mode) & mode)


def _ours(info: os.stat_result) -> bool:
    return info.st_uid == os.getuid()


def _shared(path: Path, info: os.stat_result) -> bool:
    """A folder that is not the station's own: sticky (/tmp), the home folder, or the root."""
    if not stat.S_ISDIR(info.st_mode):
        return False
    resolved = path.resolve()
    return bool(info.st_mode & stat.S_ISVTX) or resolved == Path.home().resolve() or resolved == resolved.parent


class SecretFileError(OSError):
    """A secret's file cannot be used: missing, empty, or readable by others."""


def read_secret(path: Path, what: str) -> str:
    """The secret held in `path` (its first line, without surrounding spaces). The file must be readable by its
    owner only: a secret that others on this computer can read is refused, saying how to fix it."""
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretFileError(
            f"{what}: {path} does not exist; write the secret there (one line) and chmod 600 it"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise SecretFileError(f"{what}: cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    if os.name == "posix" and stat.S_IMODE(info.st_mode) & 0o077:
        raise SecretFileError(
            f"{what}: {path} can be read by other users (mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`"
        )
    secret = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise SecretFileError(f"{what}: {path} is empty; write the secret there, on one line")
    return secret
