"""What each epoch records: every named rule's genotype and score tables, and the base criteria.

The base tables are kept per cell (not only per cell type) so that any rule over the same
criteria (another aggregation, argmax instead of argmin, another edge strength) can be
re-derived from `epochs.jsonl` alone, without the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any

import torch

from msrdsl.genotype import Genotype
from msrdsl.genotype_io import from_json, to_json
from msrdsl.ir import Call, Name, Rule, Space


def named_rules(space: Space) -> list[Rule]:
    """The selected rule first, then the recorded ones, each once."""
    rules = [space.selected_rule]
    for name in space.select.record:
        if name not in [r.name for r in rules]:
            rules.append(space.rule(name))
    return rules


def _as_lists(tables: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {t: v.detach().to("cpu", torch.float64).tolist() for t, v in tables.items()}


def recorded_calls(space: Space) -> list[Any]:
    """The base criteria the named rules and a score-based mix read, each once."""
    from msrdsl.criteria import base_calls

    found: list[Any] = []
    exprs = list(named_rules(space))
    mix = space.supernet.mix
    if isinstance(mix, Call):
        as_rule = SimpleNamespace(op=SimpleNamespace(score=mix), edge=SimpleNamespace(score=mix))
        exprs.append(as_rule)
    for rule in exprs:
        for call in base_calls(rule):
            if call not in found:
                found.append(call)
    return found


def epoch_scores(space: Space, supernet: Any, valid_batches: Callable[[], Iterable] | None
                 ) -> tuple[dict[str, Any], dict[str, Any], Genotype]:
    """({rule: {genotype, op_scores, edge_scores}}, {criterion: tables}, the selected genotype)."""
    from msrdsl.criteria import ScoreContext, derive_with_rule, rule_tables, tables
    from msrdsl.lang import format_value

    ctx = ScoreContext(space, supernet, valid_batches)
    rules: dict[str, Any] = {}
    selected = None
    for rule in named_rules(space):
        per_type = rule_tables(ctx, rule)
        genotype = derive_with_rule(ctx, rule)
        selected = selected or genotype
        rules[rule.name] = {
            "genotype": to_json(genotype),
            "op_scores": _as_lists({t: ops for t, (ops, _) in per_type.items()}),
            "edge_scores": _as_lists({t: edges for t, (_, edges) in per_type.items()}),
        }
    scores: dict[str, Any] = {}
    for call in recorded_calls(space):
        scores[format_value(call)] = _as_lists(tables(ctx, call))
        if isinstance(call, Name) and call.id == "alpha":
            softmax = Call("softmax", (call,))
            scores[format_value(softmax)] = _as_lists(tables(ctx, softmax))
    assert selected is not None
    return rules, scores, selected


def final_genotype(space: Space, records: list[dict[str, Any]], epoch: int, rule: str,
                   run_dir: str, world_size: int) -> tuple[Genotype, str, dict[str, Any]]:
    """The chosen epoch's genotype of the selected rule, its .genotype text and final.json."""
    from attrs import evolve

    from msrdsl.lang import format_genotype

    record = records[epoch]
    sel = space.select.epoch
    source = f"msrdsl search {run_dir}: rule {rule}, epoch {epoch} ({sel.rule})"
    genotype = evolve(from_json(record["rules"][rule]["genotype"]), name=space.name, source=source)
    header = (f"# Found by `msrdsl search` in {run_dir}: space {space.name}, rule {rule},",
              f"# epoch {epoch} of {len(records)} chosen by `{sel.rule}` "
              f"(valid loss {record['valid_loss']:.6g}).")
    final = {
        "epoch": epoch,
        "epoch_rule": sel.rule,
        "patience": sel.patience,
        "rule": rule,
        "valid_loss": record["valid_loss"],
        "valid_acc": record["valid_acc"],
        "genotype": to_json(genotype),
        "run_dir": run_dir,
        "world_size": world_size,
    }
    return genotype, format_genotype(genotype, header), final
