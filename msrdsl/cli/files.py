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
    from msrdsl.atomic import write_text

    write_text(path, text)


def overrides_error(text: str) -> SpaceError:
    return SpaceError(f"'--set {text}' applies to .space files only")
