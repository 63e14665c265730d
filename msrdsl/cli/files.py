"""Reading the files users name on the command line, by kind."""

from __future__ import annotations

from pathlib import Path

from msrdsl.errors import Location, MsrdslError, SpaceError

SPACE_SUFFIX = ".space"
GENOTYPE_SUFFIX = ".genotype"


def kind_of(path: str) -> str:
    """'space' or 'genotype', from the file name; anything else is a user error."""
    suffix = Path(path).suffix
    if suffix == SPACE_SUFFIX:
        return "space"
    if suffix == GENOTYPE_SUFFIX:
        return "genotype"
    raise MsrdslError(f"expected a {SPACE_SUFFIX} or {GENOTYPE_SUFFIX} file",
                      Location.whole_file(str(path)))


def write_atomic(path: str | Path, text: str) -> None:
    """Replace a file's text so that a crash leaves either the old or the new file whole."""
    import os
    import stat
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp makes the file private; the rewritten file keeps the original's permissions.
        try:
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        except FileNotFoundError:
            os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def overrides_error(text: str) -> SpaceError:
    return SpaceError(f"'--set {text}' applies to .space files only")


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
