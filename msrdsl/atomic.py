"""Writing files so that a crash at any moment leaves the old file or the new one, whole.

One implementation for every file msrdsl writes over (`fmt --write`, run directories,
checkpoints): a temporary file in the same folder (so the rename stays on one file system),
flushed and fsynced, `os.replace`d over the target, then the folder fsynced so the rename itself
is durable. A failure (disk full, read-only folder) is a RunError naming the file.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from msrdsl.errors import RunError


def write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    """Replace `path` by `data` atomically; a file replaced keeps its permissions."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _error(path, err, "choose a writable folder") from None
    try:
        os.chmod(tmp, _mode_for(path))  # mkstemp makes the file private (0600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise _error(path, err, "free some disk space or choose another folder") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable; where folders cannot be opened (Windows) a failure
    here loses durability, never data."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _error(path: Path, err: OSError, hint: str) -> RunError:
    return RunError(f"cannot write '{path}': {err.strerror or err}", hint=hint)
