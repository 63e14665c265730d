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
    prims = _expand(ops, Call(name, loc=getattr(at, "loc", None)), {"stride": stride}, stride, 0)
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
            depth: int) -> tuple[Primitive, ...]:
    if depth > _MAX_DEPTH:
        raise SpaceError(f"operator '{call.name}' refers to itself", call.loc)
    if call.name in PRIMITIVES:
        return (_primitive(call, env),)
    if call.name not in ops:
        raise SpaceError(f"unknown operator or primitive '{call.name}'", call.loc,
                         did_you_mean(call.name, [*ops, *PRIMITIVES]))
    opdef = ops[call.name]
    bound = _bind(opdef.name, list(opdef.params), call, env)
    bound["stride"] = stride
    variant = opdef.variant(stride)
    if variant is None:
        strides = ", ".join(str(v.stride) for v in opdef.variants)
        raise SpaceError(f"operator '{opdef.name}' has no pipeline for stride {stride} "
                         f"(it has: {strides})", call.loc or opdef.loc)
    out: list[Primitive] = []
    for step in variant.steps:
        out.extend(_expand(ops, step, bound, stride, depth + 1))
    return tuple(out)


def _bind(owner: str, params: list[str], call: Call, env: dict[str, Any]) -> dict[str, Any]:
    """Match a call's positional and keyword arguments to parameter names."""
    if len(call.args) > len(params):
        raise SpaceError(f"'{owner}' takes {len(params)} positional argument(s), "
                         f"got {len(call.args)}", call.loc)
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
    if kind == "dwconv":
        kind, groups = "conv", 0
    elif kind == "pwconv":
        kind, kernel = "conv", (1, 1)
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 0:
        raise SpaceError(f"groups must be a whole number >= 1, got {groups!r}", call.loc)
    for what, pair in (("kernel", kernel), ("dilation", dilation)):
        if any(x < 1 for x in pair):
            raise SpaceError(f"{what} must be >= 1, got {pair}", call.loc)
    if any(k % 2 == 0 for k in kernel) and kind in ("conv", "max_pool", "avg_pool"):
        raise SpaceError(f"kernel {kernel} has an even side; 'same' padding needs odd sides",
                         call.loc)
    if any(s not in (1, 2) for s in stride):
        raise SpaceError(f"stride must be 1 or 2, got {stride}", call.loc)
    return Primitive(kind=kind, kernel=kernel, stride=stride, dilation=dilation, groups=groups)


def _pair(v: Any, what: str, call: Call) -> tuple[int, int]:
    if isinstance(v, bool):
        raise SpaceError(f"{what} must be a whole number or a pair, got {v!r}", call.loc)
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                    for x in v):
        return (v[0], v[1])
    raise SpaceError(f"{what} must be a whole number or a pair (h, w), got {v!r}", call.loc)
