"""Source locations and the one hierarchy of user-facing errors.

Everything a user can get wrong (a file, a flag, a data folder, a checkpoint) is reported as an
`MsrdslError`; the CLI prints `error.render()` and exits with code 2. Anything else escaping is a
bug in msrdsl and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from attrs import field, frozen


@frozen
class Location:
    """A span in a source text: 1-based line and column, end exclusive."""

    path: str
    line: int
    col: int
    end_line: int
    end_col: int
    # The whole text travels with the span so that any stage can quote the line; it takes no part
    # in equality so that IR built from different texts still compares by meaning.
    text: str = field(default="", eq=False, repr=False)

    @classmethod
    def whole_file(cls, path: str) -> Location:
        return cls(path, 0, 0, 0, 0)

    def __str__(self) -> str:
        if self.line <= 0:
            return self.path
        return f"{self.path}:{self.line}:{self.col}"

    def source_line(self) -> str | None:
        lines = self.text.split("\n")  # the parser counts only \n as a line break
        if 1 <= self.line <= len(lines):
            return lines[self.line - 1]
        return None


class MsrdslError(Exception):
    """An error the user can fix: a message, where it happened, and a hint."""

    kind = "error"

    def __init__(self, message: str, loc: Location | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.hint = hint

    def __str__(self) -> str:
        return self.render()

    def render(self) -> str:
        """`path:line:col: error: message`, the source line, a caret under the span, the hint."""
        prefix = f"{self.loc}: " if self.loc is not None else ""
        out = [f"{prefix}{self.kind}: {self.message}"]
        if self.loc is not None and (line := self.loc.source_line()) is not None:
            out.append(f"  {line.rstrip()}")
            out.append("  " + _underline(line, self.loc))
        if self.hint:
            out.append(f"  hint: {self.hint}")
        return "\n".join(out)


def _underline(line: str, loc: Location) -> str:
    start = max(loc.col - 1, 0)
    if loc.end_line == loc.line and loc.end_col > loc.col:
        width = loc.end_col - loc.col
    else:
        width = max(len(line.rstrip()) - start, 1)
    # Tabs in the source keep their width in the marker line so the caret stays under the span.
    pad = "".join("\t" if ch == "\t" else " " for ch in line[:start])
    return pad + "^" + "~" * (width - 1)


class SpaceSyntaxError(MsrdslError):
    """Text that does not follow the grammar."""


class SpaceError(MsrdslError):
    """A well-formed space that says something impossible or unknown."""


class GenotypeError(MsrdslError):
    """A genotype that is malformed or does not fit its space."""


class DataError(MsrdslError):
    """A data set that is missing, incomplete or unreadable."""


class RunError(MsrdslError):
    """A run directory or checkpoint that cannot be used as asked."""


class DivergedError(RunError):
    """Training produced a NaN or infinite loss."""


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    """A hint naming the closest valid choice, or listing the choices when none is close."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    if choices and len(choices) <= 12:
        return "expected one of: " + ", ".join(choices)
    return None
