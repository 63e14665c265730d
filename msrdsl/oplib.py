"""Operators resolved to primitives: `op sep_conv_3x3` at stride 2 -> a tuple of `Primitive`s.

Torch-free: the compiler builds layers from the result, validation checks strides and the last
convolution from it, and `msrdsl check` reports problems at the definition that caused them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from msrdsl.errors import SpaceError, did_you_mean
from msrdsl.ir import MISSING, PRIMITIVES, Call, Name, OpDef, Primitive

_MAX_DEPTH = 32  # operators referring to operators; deeper means a definition refers to itself


def resolve_op(ops: Mapping[str, OpDef], name: str, stride: int, *, at: Any = None) -> tuple[Primitive, ...]:
    """The primitives operator `name` runs on an edge of the given stride."""
    if name not in ops:
        raise SpaceError(f"unknown operator '{name}'", getattr(at, "loc", None),
                         did_you_mean(name, ops))
    prims = _expand(ops, Call(name, loc=getattr(at, "loc", None)), {"stride": stride}, stride, ())
    total = _total_stride(prims)
    if total != (stride, stride):
        opdef = ops[name]
        raise SpaceError(
            f"operator '{name}' at stride {stride} reduces the map by {total[0]}x{total[1]}, "
            f"not {stride}x{stride}", opdef.loc,
            "give its first convolution or pool `stride=stride`, or add a `stride 2:` pipeline")
    return prims


def last_conv(prims: tuple[Primitive, ...]) -> int | None:
    """Index of the operator's last convolution (the one MSR-DARTS scores), or None."""
    found = [i for i, p in enumerate(prims) if p.is_conv]
    return found[-1] if found else None


def conv_indices(prims: tuple[Primitive, ...]) -> list[int]:
    return [i for i, p in enumerate(prims) if p.is_conv]


def _total_stride(prims: tuple[Primitive, ...]) -> tuple[int, int]:
    h = w = 1
    for p in prims:
        if p.kind == "factorized_reduce":
            h, w = h * 2, w * 2
        else:
            h, w = h * p.stride[0], w * p.stride[1]
    return h, w


def _expand(ops: Mapping[str, OpDef], call: Call, env: dict[str, Any], stride: int,
            chain: tuple[str, ...]) -> tuple[Primitive, ...]:
    """The primitives of `call`; `chain` names the operators being expanded around it."""
    if call.name in PRIMITIVES:
        try:
            return (_primitive(call, env),)
        except SpaceError as err:
            if err.hint is None and len(chain) > 1:
                err.hint = "as used by " + " -> ".join(f"'{n}'" for n in chain)
            raise
    if call.name in chain:
        cycle = " -> ".join((*chain[chain.index(call.name):], call.name))
        raise SpaceError(f"operator '{call.name}' refers to itself"
                         + (f" ({cycle})" if chain[-1] != call.name else ""), call.loc,
                         "an operator is built from primitives and operators defined without it")
    if call.name not in ops:
        raise SpaceError(f"unknown operator or primitive '{call.name}'", call.loc,
                         did_you_mean(call.name, [*ops, *PRIMITIVES]))
    if len(chain) > _MAX_DEPTH:
        raise SpaceError(f"operator '{chain[0]}' nests operators more than {_MAX_DEPTH} deep",
                         call.loc)
    opdef = ops[call.name]
    bound = _bind(opdef.name, list(opdef.params), call, env)
    missing = [p for p in opdef.params if p not in bound]
    if missing:
        example = f"{opdef.name}({', '.join('3' for _ in opdef.params)})"
        raise SpaceError(f"operator '{opdef.name}' needs a value for '{missing[0]}'", call.loc,
                         f"write it as {example}" if chain else
                         f"define `op {opdef.name}_x = {example}` and list that")
    bound["stride"] = stride
    variant = opdef.variant(stride)
    if variant is None:
        strides = ", ".join(str(v.stride) for v in opdef.variants)
        raise SpaceError(f"operator '{opdef.name}' has no pipeline for stride {stride} "
                         f"(it has: {strides})", call.loc or opdef.loc,
                         f"add `stride {stride}: ...` to its definition")
    out: list[Primitive] = []
    for step in variant.steps:
        out.extend(_expand(ops, step, bound, stride, (*chain, opdef.name)))
    return tuple(out)


def _bind(owner: str, params: list[str], call: Call, env: dict[str, Any]) -> dict[str, Any]:
    """Match a call's positional and keyword arguments to parameter names."""
    if len(call.args) > len(params):
        takes = {0: "no arguments", 1: "1 argument"}.get(len(params), f"{len(params)} arguments")
        raise SpaceError(f"'{owner}' takes {takes}, got {len(call.args)}", call.loc,
                         f"'{owner}' has: {', '.join(params)}" if params else None)
    bound = {p: _value(a, env) for p, a in zip(params, call.args)}
    for key, value in call.kwargs:
        if key not in params:
            raise SpaceError(f"'{owner}' has no parameter '{key}'", call.loc,
                             did_you_mean(key, params))
        if key in bound:
            raise SpaceError(f"'{owner}' got '{key}' twice", call.loc)
        bound[key] = _value(value, env)
    return bound


def _value(v: Any, env: dict[str, Any]) -> Any:
    if isinstance(v, Name):
        if v.id not in env:
            raise SpaceError(f"unknown name '{v.id}'", v.loc, did_you_mean(v.id, env))
        return env[v.id]
    if isinstance(v, tuple):
        return tuple(_value(x, env) for x in v)
    return v


def _primitive(call: Call, env: dict[str, Any]) -> Primitive:
    signature = PRIMITIVES[call.name]
    names = [n for n, _ in signature]
    bound = _bind(call.name, names, call, env)
    for n, default in signature:
        if n not in bound:
            if default is MISSING:
                raise SpaceError(f"primitive '{call.name}' needs '{n}'", call.loc)
            bound[n] = default
    kind = call.name
    kernel = _pair(bound.get("kernel", 1), "kernel", call)
    stride = _pair(bound.get("stride", 1), "stride", call)
    dilation = _pair(bound.get("dilation", 1), "dilation", call)
    groups = bound.get("groups", 1)
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise SpaceError(f"groups must be a whole number >= 1, got {_show(groups)}", call.loc,
                         "a depthwise convolution is written dwconv(k)")
    if kind == "dwconv":
        kind, groups = "conv", 0  # 0: one group per channel, whatever the channel count
    elif kind == "pwconv":
        kind, kernel = "conv", (1, 1)
    for what, pair in (("kernel", kernel), ("dilation", dilation)):
        if any(x < 1 for x in pair):
            raise SpaceError(f"{what} must be >= 1, got {_show(pair)}", call.loc)
    if any(k % 2 == 0 for k in kernel) and kind in ("conv", "max_pool", "avg_pool"):
        raise SpaceError(f"kernel {_show(kernel)} has an even side; 'same' padding needs odd sides",
                         call.loc)
    if any(s not in (1, 2) for s in stride):
        raise SpaceError(f"stride must be 1 or 2, got {_show(stride)}", call.loc)
    return Primitive(kind=kind, kernel=kernel, stride=stride, dilation=dilation, groups=groups)


def _pair(v: Any, what: str, call: Call) -> tuple[int, int]:
    def whole(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    if whole(v):
        return (v, v)
    if isinstance(v, tuple) and len(v) == 2 and all(whole(x) for x in v):
        return (v[0], v[1])
    raise SpaceError(f"{what} must be a whole number or a pair (h, w), got {_show(v)}", call.loc)


def _show(value: Any) -> str:
    """A value as a pipeline writes it: pairs as (h, w)."""
    from msrdsl.lang.printer import format_value

    if isinstance(value, tuple):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    try:
        return format_value(value)
    except (TypeError, ValueError):
        return repr(value)
