"""Whole-space checks: what each setting means together with the others.

Every check raises a located `SpaceError` pointing at the setting that has to change.
"""

from __future__ import annotations

import re
from fractions import Fraction

from msrdsl.errors import SpaceError, did_you_mean
from msrdsl.ir import Call, Name, Rule, Space
from msrdsl.oplib import last_conv, resolve_op
from msrdsl.scores import ScoreUse, check_score, uses_name


def validate_space(space: Space) -> None:
    """Raise the first problem found in `space`, located where it was written."""
    _check_cell(space)
    _check_network(space)
    _check_operators(space)
    mix = _check_mix(space)
    rule = space.select.rule
    if isinstance(rule, str):
        rule = _named_rule(space, rule, _item_loc(space, "select.rule", rule))
    rules = [("select", rule)]
    seen: set[str] = set()
    for name in space.select.record:
        at = _item_loc(space, "select.record", name)
        if name in seen:
            raise SpaceError(f"rule '{name}' is recorded twice", at)
        seen.add(name)
        rules.append(("select.record", _named_rule(space, name, at)))
    for where, rule in rules:
        _check_rule(space, rule, where, alpha=mix.needs_alpha)


def mixes_alpha(space: Space) -> bool:
    """Whether the supernet has architecture parameters (softmax(alpha) mixing)."""
    return uses_name(space.supernet.mix, "alpha")


def _check_cell(space: Space) -> None:
    cell = space.cell
    if cell.keep > cell.inputs:
        raise SpaceError(
            f"'keep' {cell.keep} is larger than the {cell.inputs} predecessors of the first "
            f"intermediate node", space.where("cell.keep"),
            f"node {cell.inputs} can keep at most {cell.inputs} edges")


def _check_network(space: Space) -> None:
    for section, cells in (("search", space.network.cells), ("evaluation", space.evaluate.cells)):
        for r in space.network.reduce_at:
            at = _item_loc(space, "network.reduce_at", _number(r))
            if isinstance(r, Fraction) and not 0 <= r < 1:
                raise SpaceError(f"a reduction at {_number(r)} of the depth is outside the network",
                                 at, "fractions of the depth lie in [0, 1), like 1/3 and 2/3")
            if isinstance(r, int) and not 0 <= r < cells:
                raise SpaceError(f"a reduction at cell {r} is outside the {section} network of "
                                 f"{cells} cell{'s' if cells != 1 else ''}", at,
                                 f"cell indices run from 0 to {cells - 1}; fractions like 1/3 "
                                 "fit any depth")
    if not 0 < space.dataset.split < 1:
        raise SpaceError(f"'split' must lie strictly between 0 and 1, got "
                         f"{_number(space.dataset.split)}",
                         space.where("dataset.split"), "the paper's 4:1 split is `split 4/5`")


def _number(r: Fraction | int) -> str:
    from msrdsl.lang.printer import format_value

    return format_value(r)


def _strides(space: Space) -> tuple[int, ...]:
    return (1, 2) if space.network.reduction_indices() else (1,)


def _check_operators(space: Space) -> None:
    if not space.operators:
        raise SpaceError("'operators' is empty", space.where("operators"),
                         "list the candidate operators, e.g. [sep_conv_3x3, dil_conv_3x3]")
    ops = {o.name: o for o in space.ops}
    seen: set[str] = set()
    for name in space.operators:
        at = _item_loc(space, "operators", name)
        if name in seen:
            raise SpaceError(f"operator '{name}' is listed twice", at)
        seen.add(name)
        if name not in ops:
            raise SpaceError(f"unknown operator '{name}'", at,
                             did_you_mean(name, [n for n, o in ops.items() if not o.params]))
        for stride in (1, 2):
            # Every operator must build at both strides: evaluation networks reduce even when the
            # search network of a toy space does not.
            resolve_op(ops, name, stride, at=_Located(at))
    for name in space.user_ops:
        # A definition no space uses is still checked, so errors show where they were written.
        if not ops[name].params:
            for stride in (1, 2):
                resolve_op(ops, name, stride, at=ops[name])


class _Located:
    def __init__(self, loc):
        self.loc = loc


def _item_loc(space: Space, path: str, name: str):
    """The location of one name inside a list setting, if the list was written in a file."""
    loc = space.where(path)
    if loc is None or not loc.text:
        return loc
    line = loc.source_line() or ""
    if loc.end_line == loc.line:
        # The whole item, not a part of a longer one ('msr' in 'msr_max', '1' in '1/3').
        pattern = re.compile(rf"(?<![\w./]){re.escape(name)}(?![\w./])")
        found = pattern.search(line, loc.col - 1, loc.end_col - 1)
        if found:
            return type(loc)(loc.path, loc.line, found.start() + 1, loc.line, found.end() + 1,
                             loc.text)
    return loc


def _check_mix(space: Space) -> ScoreUse:
    mix = space.supernet.mix
    loc = space.where("supernet.mix")
    if isinstance(mix, Name) and mix.id == "uniform":
        return ScoreUse("type")
    if not (isinstance(mix, Call) and mix.name == "softmax"):
        raise SpaceError("'mix' must be uniform, softmax(alpha) or softmax(SCORE)", loc,
                         "e.g. `mix softmax(-stable_rank(last_conv, at=cell_input))`")
    use = check_score(mix, loc)
    if use.level not in ("cell", "type"):
        raise SpaceError("'mix' needs a score per edge and operator", loc)
    if use.needs_data:
        raise SpaceError("'mix' cannot depend on validation data", loc,
                         "use a score of the weights, such as stable_rank(last_conv)")
    if use.needs_alpha and not (isinstance(mix.args[0], Name) and mix.args[0].id == "alpha"):
        raise SpaceError("'mix' can use alpha only as softmax(alpha)", loc)
    if use.needs_conv:
        _check_has_conv(space, (), "supernet.mix")
    return use


def _named_rule(space: Space, name: str, at) -> Rule:
    names = {r.name for r in space.rules}
    if name not in names:
        raise SpaceError(f"unknown rule '{name}'", at, did_you_mean(name, names))
    return space.rule(name)


def _who(space: Space, rule: Rule) -> str:
    """How messages name a rule: by its name, or as the one written inline in select."""
    return "the rule written in select" if rule is space.select.rule else f"rule '{rule.name}'"


def _check_rule(space: Space, rule: Rule, where: str, alpha: bool) -> None:
    who = _who(space, rule)
    ops = {o.name for o in space.ops}
    for name in rule.exclude:
        if name not in ops:
            at = space.locs.get(f"rule.{rule.name}.exclude")
            at = _item_loc(space, f"rule.{rule.name}.exclude", name) if at else rule.loc
            raise SpaceError(f"unknown operator '{name}' in the exclude list of {who}", at,
                             did_you_mean(name, ops))
    op_use = check_score(rule.op.score, rule.op.loc or rule.loc)
    if op_use.level != "type":
        raise SpaceError(
            f"{who} chooses operators from a score per "
            f"{'cell' if op_use.level == 'cell' else 'edge'}; it needs one per edge and operator "
            "of a cell type", rule.op.loc or rule.loc,
            "average over the cells of a type: mean_over_cells(...)" if op_use.level == "cell"
            else None)
    edge_use = check_score(rule.edge.score, rule.edge.loc or rule.loc)
    if edge_use.level != "edge":
        raise SpaceError(f"{who} ranks edges by a score that is not one per edge",
                         rule.edge.loc or rule.loc, "reduce over the operators: max_over_ops(...)")
    for use, selection in ((op_use, rule.op), (edge_use, rule.edge)):
        if use.needs_alpha and not alpha:
            at = selection.loc if rule is space.select.rule else (
                _item_loc(space, where, rule.name) if where != "select"
                else space.where("select.rule"))
            raise SpaceError(
                f"{who} reads alpha, but this supernet's mix is {_mix_words(space)}", at,
                "alpha exists only with `mix softmax(alpha)`")
        if use.needs_conv:
            _check_has_conv(space, rule.exclude, where, who)


def _mix_words(space: Space) -> str:
    from msrdsl.lang.printer import format_value

    return format_value(space.supernet.mix)


def _check_has_conv(space: Space, exclude: tuple[str, ...], where: str, who: str | None = None) -> None:
    ops = {o.name: o for o in space.ops}
    for name in space.operators:
        if name in exclude:
            continue
        for stride in _strides(space):
            if last_conv(resolve_op(ops, name, stride)) is None:
                at = f" at stride {stride}" if stride != 1 else ""
                raise SpaceError(
                    f"{who or 'the mixing score'} measures the last convolution, but operator "
                    f"'{name}' has no convolution{at}", _item_loc(space, "operators", name),
                    f"leave '{name}' out of the operators"
                    + (" or add it to the rule's exclude list" if who else ""))
