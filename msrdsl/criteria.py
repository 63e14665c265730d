"""Scores from a trained supernet, and the rules that turn them into genotypes.

Each base criterion maps a supernet to one table per cell type, shaped (cells of the type,
edges, ops); the score expressions of a .space file (msrdsl/scores.py) combine them. A rule's op
score ends at one (edges, ops) table per type and its edge score at one (edges,) vector, which
`msrdsl.derive` turns into a Genotype (Eq. 6-9).

To add a criterion: write `fn(ctx, call) -> {"normal": T, "reduce": T}` and register it with
`register(ScoreFunction(...), fn)`; a .space file can then name it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from attrs import define, field

from msrdsl.derive import derive_genotype
from msrdsl.errors import SpaceError
from msrdsl.genotype import Genotype
from msrdsl.ir import Call, Name, Negate, Rule, Space
from msrdsl.lang.printer import format_value
from msrdsl.rank import ConvSpec, batched_operator_norms
from msrdsl.scores import SCORE_FUNCTIONS, ScoreFunction, check_score, register_score

CELL_TYPES = ("normal", "reduce")
Tables = dict[str, torch.Tensor]  # cell type -> score table

_BASE: dict[str, Callable[[ScoreContext, Call], Tables]] = {}


def register(fn: ScoreFunction, compute: Callable[[ScoreContext, Call], Tables]) -> None:
    """Make a new base criterion nameable in .space files and computable here."""
    register_score(fn)
    _BASE[fn.name] = compute


@define
class ScoreContext:
    """What computing scores may look at: the space, the supernet, and validation data."""

    space: Space
    supernet: Any
    valid_batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]] | None = None
    _cache: dict[str, Tables] = field(factory=dict)

    @classmethod
    def from_record(cls, space: Space, scores: dict[str, dict[str, Any]]) -> ScoreContext:
        """A context whose base criteria come from a run's record, with no supernet at all."""
        ctx = cls(space, None)
        for text, per_type in scores.items():
            ctx._cache[text] = {t: torch.tensor(v) for t, v in per_type.items()}
        return ctx

    def last_convs(self) -> list[Any]:
        """The last convolution of every candidate operator, in (cell, edge, op) order."""
        return self.supernet.last_convs()

    def cells_of(self, cell_type: str) -> list[int]:
        return [i for i, t in enumerate(self.supernet.cell_types) if t == cell_type]


# ---------------------------------------------------------------------------------------------
# Evaluating score expressions


def tables(ctx: ScoreContext, expr: Any, exclude: Sequence[str] = ()) -> Tables:
    """The score tables of an expression, one per cell type (cached per context)."""
    # Base criteria do not depend on a rule's exclude list; the tables built from them may.
    base = isinstance(expr, Name) or (isinstance(expr, Call) and expr.name in _BASE)
    key = format_value(expr) if base else format_value(expr) + "|" + ",".join(exclude)
    if key not in ctx._cache:
        if base and ctx.supernet is None:
            raise SpaceError(f"'{format_value(expr)}' was not recorded by this run",
                             hint="derive from the run's saved supernet weights instead")
        ctx._cache[key] = _evaluate(ctx, expr, tuple(exclude))
    return ctx._cache[key]


def _evaluate(ctx: ScoreContext, expr: Any, exclude: tuple[str, ...]) -> Tables:
    if isinstance(expr, Negate):
        return {t: -v for t, v in tables(ctx, expr.expr, exclude).items()}
    if isinstance(expr, Name):
        if expr.id == "alpha":
            return _alpha(ctx)
        raise SpaceError(f"unknown score '{expr.id}'", expr.loc)
    assert isinstance(expr, Call)
    if expr.name in _BASE:
        return _BASE[expr.name](ctx, expr)
    inner = tables(ctx, expr.args[0], exclude)
    if expr.name == "softmax":
        return {t: torch.softmax(v, dim=-1) for t, v in inner.items()}
    if expr.name == "mean_over_cells":
        return {t: v.mean(dim=0) for t, v in inner.items()}
    if expr.name in ("max_over_ops", "min_over_ops"):
        keep = _kept_ops(ctx.space, exclude)
        reduce = torch.amax if expr.name == "max_over_ops" else torch.amin
        return {t: reduce(v[..., keep], dim=-1) for t, v in inner.items()}
    raise SpaceError(f"score function '{expr.name}' has no computation registered", expr.loc)


def _kept_ops(space: Space, exclude: Sequence[str]) -> list[int]:
    return [i for i, name in enumerate(space.operators) if name not in exclude]


def _alpha(ctx: ScoreContext) -> Tables:
    alphas = ctx.supernet.arch_parameters()
    if not alphas:
        raise SpaceError("this supernet has no alpha (it does not mix by softmax(alpha))")
    return {t: a.detach().float().cpu() for t, a in zip(CELL_TYPES, alphas)}


# ---------------------------------------------------------------------------------------------
# Base criteria of the last convolution


def _per_cell(ctx: ScoreContext, values: torch.Tensor) -> Tables:
    """Split a flat (cells * edges * ops) vector, in last_convs order, into tables per type."""
    s = ctx.space
    per_cell = values.reshape(s.network.cells, s.cell.edges, len(s.operators))
    return {t: per_cell[ctx.cells_of(t)] for t in CELL_TYPES}


def _operator_norms(ctx: ScoreContext, call: Call):
    at = call.kwarg("at", Name("real"))
    convs = ctx.last_convs()
    specs = [ConvSpec(weight_shape=tuple(c.module.weight.shape), input_hw=_resolution(c, at.id),
                      stride=c.stride, dilation=c.dilation, groups=c.groups) for c in convs]
    weights = [c.module.weight.detach().to("cpu", torch.float64) for c in convs]
    return batched_operator_norms(weights, specs), specs


def _resolution(conv: Any, at: str) -> tuple[int, int]:
    """Where the conv's operator is measured: its real input, or its cell's input resolution.

    `cell_input` is the reference code's choice: a stride-1 edge is measured at the resolution the
    cell receives even when it runs at half of it (edges between nodes of a reduction cell).
    """
    if at == "real":
        return conv.input_hw
    h, w = conv.cell_input_hw
    if conv.edge_stride == 2:
        return conv.input_hw  # a strided edge's last conv runs after the reduction either way
    return (h, w)


def _stable_rank(ctx: ScoreContext, call: Call) -> Tables:
    norms, specs = _operator_norms(ctx, call)
    values = norms.stable_rank
    if call.kwarg("per_pixel", False):
        pixels = torch.tensor([s.input_hw[0] * s.input_hw[1] for s in specs], dtype=values.dtype)
        values = values / pixels
    return _per_cell(ctx, values.float())


def _spectral_norm(ctx: ScoreContext, call: Call) -> Tables:
    norms, _ = _operator_norms(ctx, call)
    return _per_cell(ctx, norms.spectral.float())


def _frobenius_norm(ctx: ScoreContext, call: Call) -> Tables:
    norms, _ = _operator_norms(ctx, call)
    return _per_cell(ctx, norms.frobenius.float())


@torch.no_grad()
def _noise_sensitivity(ctx: ScoreContext, call: Call) -> Tables:
    """Eq. 3 on validation inputs captured at each last convolution.

    psi(c, x) = E_eta ||c(x + eta ||x||) - c(x)||^2 / ||c(x)||^2, eta ~ N(0, I). The convolution
    is linear, so the numerator is ||x||^2 ||c(eta)||^2 and one conv of the noise per draw suffices.
    """
    if ctx.valid_batches is None:
        raise SpaceError("noise_sensitivity needs validation data; it is computed during a search "
                         "or by `msrdsl derive` on a run whose data set is available")
    draws = int(call.kwarg("draws", 4))
    batches = int(call.kwarg("batches", 1))
    scale = float(call.kwarg("scale", 1.0))
    convs = ctx.last_convs()
    totals = torch.zeros(len(convs), dtype=torch.float64)
    counts = torch.zeros(len(convs), dtype=torch.float64)
    captured: dict[int, torch.Tensor] = {}
    hooks = [c.module.register_forward_pre_hook(_capture(captured, i)) for i, c in enumerate(convs)]
    generator = torch.Generator().manual_seed(0)
    was_training = ctx.supernet.training
    ctx.supernet.eval()
    try:
        for b, (images, _) in enumerate(ctx.valid_batches()):
            if b >= batches:
                break
            captured.clear()
            ctx.supernet(images.to(_device(ctx.supernet)))
            for i, c in enumerate(convs):
                x = captured[i].double()  # (N, C, H, W)
                weight = c.module.weight.double()
                clean = torch.nn.functional.conv2d(x, weight, None, c.module.stride,
                                                   c.module.padding, c.module.dilation,
                                                   c.module.groups)
                x_sq = x.flatten(1).pow(2).sum(1)
                clean_sq = clean.flatten(1).pow(2).sum(1).clamp_min(1e-30)
                for _ in range(draws):
                    eta = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.device)
                    noisy = torch.nn.functional.conv2d(eta * scale, weight, None, c.module.stride,
                                                       c.module.padding, c.module.dilation,
                                                       c.module.groups)
                    psi = x_sq * noisy.flatten(1).pow(2).sum(1) / clean_sq
                    totals[i] += psi.sum().cpu()
                    counts[i] += psi.numel()
    finally:
        for h in hooks:
            h.remove()
        ctx.supernet.train(was_training)
    return _per_cell(ctx, (totals / counts.clamp_min(1)).float())


def _capture(store: dict[int, torch.Tensor], index: int):
    def hook(module, inputs):
        store[index] = inputs[0].detach()
    return hook


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


_BASE.update({
    "stable_rank": _stable_rank,
    "spectral_norm": _spectral_norm,
    "frobenius_norm": _frobenius_norm,
    "noise_sensitivity": _noise_sensitivity,
})


# ---------------------------------------------------------------------------------------------
# Rules -> genotypes


def rule_tables(ctx: ScoreContext, rule: Rule) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per cell type: the (edges, ops) op-choice table and the (edges,) edge strengths."""
    ops = tables(ctx, rule.op.score, rule.exclude)
    edges = tables(ctx, rule.edge.score, rule.exclude)
    return {t: (ops[t], edges[t]) for t in CELL_TYPES}


def derive_with_rule(ctx: ScoreContext, rule: Rule, name: str | None = None) -> Genotype:
    """The genotype a rule picks on the supernet of `ctx` (Eq. 6-9)."""
    per_type = rule_tables(ctx, rule)
    s = ctx.space
    return derive_genotype(name or rule.name, per_type["normal"], per_type["reduce"],
                           list(s.operators), rule, s.cell)


def base_calls(rule: Rule) -> list[Any]:
    """The base criteria a rule reads (what a run records per cell, edge and op)."""
    found: list[Any] = []

    def walk(expr):
        if isinstance(expr, Negate):
            walk(expr.expr)
        elif isinstance(expr, Name):
            if expr not in found:
                found.append(expr)
        elif isinstance(expr, Call):
            if expr.name in _BASE:
                if expr not in found:
                    found.append(expr)
            else:
                for a in expr.args:
                    walk(a)

    walk(rule.op.score)
    walk(rule.edge.score)
    return found


def mix_weights(ctx: ScoreContext) -> Tables:
    """The mixing weights of a score-mixed supernet (`mix softmax(SCORE)`), per cell or per type."""
    mix = ctx.space.supernet.mix
    return tables(ctx, mix)


def known_criteria() -> list[str]:
    return sorted(SCORE_FUNCTIONS)


def check_rule_text(space: Space, rule: Rule) -> None:
    check_score(rule.op.score)
    check_score(rule.edge.score)
