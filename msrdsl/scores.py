"""The score functions a .space file can name, and the checking of score expressions.

Torch-free: this is what `msrdsl check` knows. `msrdsl.criteria` gives each name its
computation; a new criterion is registered there with `register_score` and here it becomes
nameable in a file (see `criteria.register`).

A score expression has a *level*, the shape of the table it produces for one cell type:
  cell  (cells of the type, edges, ops)   e.g. stable_rank(last_conv)
  type  (edges, ops)                      e.g. mean_over_cells(...), softmax(alpha)
  edge  (edges,)                          e.g. max_over_ops(...)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from attrs import frozen

from msrdsl.errors import SpaceError, did_you_mean
from msrdsl.ir import Call, Name, Negate

LEVELS = ("cell", "type", "edge")


@frozen
class ScoreFunction:
    """How a score function is written: its argument and what it produces."""

    name: str
    doc: str
    # "last_conv": takes the conv to measure; "score": takes another score expression.
    argument: str
    kwargs: Mapping[str, tuple[str, ...] | type] = {}
    # level of the result, or a function from the argument's level to it
    level: str | Callable[[str], str] = "cell"
    accepts: tuple[str, ...] = ("cell", "type", "edge")
    needs_conv: bool = False
    needs_alpha: bool = False
    needs_data: bool = False


_AT = ("real", "cell_input")

SCORE_FUNCTIONS: dict[str, ScoreFunction] = {}


def register_score(fn: ScoreFunction) -> ScoreFunction:
    """Make a score function nameable in .space files."""
    SCORE_FUNCTIONS[fn.name] = fn
    return fn


for _fn in (
    ScoreFunction("stable_rank", "R(c) = ||c||_F^2 / ||c||_2^2 of the conv as an operator on its "
                  "feature map (Sedghi et al.)", "last_conv",
                  {"at": _AT, "per_pixel": bool}, needs_conv=True),
    ScoreFunction("spectral_norm", "||c||_2 of the conv as an operator", "last_conv",
                  {"at": _AT}, needs_conv=True),
    ScoreFunction("frobenius_norm", "||c||_F of the conv as an operator", "last_conv",
                  {"at": _AT}, needs_conv=True),
    ScoreFunction("noise_sensitivity", "E ||c(x + eta ||x||) - c(x)||^2 / ||c(x)||^2 on "
                  "validation inputs (Eq. 3)", "last_conv",
                  {"draws": int, "batches": int, "scale": float}, needs_conv=True, needs_data=True),
    ScoreFunction("softmax", "softmax over the operators of each edge (Eq. 1)", "score",
                  level=lambda lv: lv, accepts=("cell", "type")),
    ScoreFunction("mean_over_cells", "mean over the cells of one type (Eq. 7)", "score",
                  level="type", accepts=("cell",)),
    ScoreFunction("max_over_ops", "the largest score of each edge (Eq. 6, 8)", "score",
                  level="edge", accepts=("type",)),
    ScoreFunction("min_over_ops", "the smallest score of each edge", "score",
                  level="edge", accepts=("type",)),
):
    register_score(_fn)

# Bare names usable as scores.
SCORE_NAMES = {"alpha": ("type", "the architecture parameters of softmax(alpha) mixing")}
DIRECTIONS = ("argmin", "argmax")


@frozen
class ScoreUse:
    """What checking an expression found: its level and what computing it needs."""

    level: str
    needs_conv: bool = False
    needs_alpha: bool = False
    needs_data: bool = False


def check_score(expr: Any, at: Any = None) -> ScoreUse:
    """Check a score expression's names, arguments and levels; return its level and needs.

    `at` locates parts that carry no location of their own (a number written as a score)."""
    if isinstance(expr, Negate):
        return check_score(expr.expr, expr.loc or at)
    if isinstance(expr, Name):
        if expr.id in SCORE_NAMES:
            return ScoreUse(SCORE_NAMES[expr.id][0], needs_alpha=expr.id == "alpha")
        if expr.id in SCORE_FUNCTIONS:
            raise SpaceError(f"'{expr.id}' is a function; write {expr.id}(...)", expr.loc)
        raise SpaceError(f"unknown score '{expr.id}'", expr.loc,
                         did_you_mean(expr.id, [*SCORE_NAMES, *SCORE_FUNCTIONS]))
    if not isinstance(expr, Call):
        raise SpaceError(f"expected a score expression, found {_show(expr)}",
                         getattr(expr, "loc", None) or at,
                         "a score is a name like alpha or a call like stable_rank(last_conv)")
    fn = SCORE_FUNCTIONS.get(expr.name)
    if fn is None:
        close = did_you_mean(expr.name, SCORE_FUNCTIONS)
        listing = "registered score functions: " + ", ".join(sorted(SCORE_FUNCTIONS))
        raise SpaceError(f"unknown score function '{expr.name}'", expr.loc,
                         f"{close} ({listing})" if close and close.startswith("did") else listing)
    if len(expr.args) != 1:
        raise SpaceError(f"'{expr.name}' takes one argument, got {len(expr.args)}", expr.loc)
    _check_kwargs(fn, expr)
    arg = expr.args[0]
    if fn.argument == "last_conv":
        if not (isinstance(arg, Name) and arg.id == "last_conv"):
            raise SpaceError(f"'{expr.name}' measures a convolution: write {expr.name}(last_conv)",
                             getattr(arg, "loc", None) or expr.loc)
        return ScoreUse("cell", needs_conv=fn.needs_conv, needs_data=fn.needs_data)
    inner = check_score(arg, expr.loc)
    if inner.level not in fn.accepts:
        raise SpaceError(
            f"'{expr.name}' takes a score per {_level_words(fn.accepts)}, but its argument gives "
            f"one per {_level_words((inner.level,))}", expr.loc, _level_hint(fn, inner.level))
    level = fn.level(inner.level) if callable(fn.level) else fn.level
    return ScoreUse(level, inner.needs_conv or fn.needs_conv, inner.needs_alpha,
                    inner.needs_data or fn.needs_data)


def _show(value: Any) -> str:
    from msrdsl.lang.printer import format_value

    try:
        return format_value(value)
    except (TypeError, ValueError):
        return repr(value)


def _check_kwargs(fn: ScoreFunction, expr: Call) -> None:
    for key, value in expr.kwargs:
        if key not in fn.kwargs:
            raise SpaceError(f"'{fn.name}' has no option '{key}'", expr.loc,
                             did_you_mean(key, fn.kwargs) if fn.kwargs else f"'{fn.name}' takes no options")
        expected = fn.kwargs[key]
        if isinstance(expected, tuple):
            if not (isinstance(value, Name) and value.id in expected):
                raise SpaceError(f"'{key}' must be one of: {', '.join(expected)}",
                                 getattr(value, "loc", None) or expr.loc)
        elif expected is bool and not isinstance(value, bool):
            raise SpaceError(f"'{key}' must be true or false", expr.loc)
        elif expected is int and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SpaceError(f"'{key}' must be a whole number >= 1", expr.loc)
        elif expected is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise SpaceError(f"'{key}' must be a number", expr.loc)


def _level_words(levels: tuple[str, ...]) -> str:
    words = {"cell": "cell, edge and operator", "type": "edge and operator (one per cell type)",
             "edge": "edge"}
    return " or ".join(words[lv] for lv in levels)


def _level_hint(fn: ScoreFunction, level: str) -> str | None:
    if fn.name in ("max_over_ops", "min_over_ops") and level == "cell":
        return "average over the cells of a type first: mean_over_cells(...)"
    if level == "edge":
        return "this score was already reduced over the operators"
    return None


def uses_name(expr: Any, name: str) -> bool:
    """Whether a score expression mentions `name` (a function or a bare name)."""
    if isinstance(expr, Negate):
        return uses_name(expr.expr, name)
    if isinstance(expr, Name):
        return expr.id == name
    if isinstance(expr, Call):
        return expr.name == name or any(uses_name(a, name) for a in expr.args)
    return False
