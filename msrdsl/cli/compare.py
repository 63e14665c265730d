"""`msrdsl compare`: rules on one trained supernet, or genotypes, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from msrdsl.cli.console import console, print_json


@click.command("compare")
@click.argument("items", nargs=-1, required=True)
@click.option("--criteria", "-c", help="With a RUN: comma-separated rule names (default: every "
              "rule the run's space names, plus msr/msr_max/darts where they apply).")
@click.option("--epoch", type=int, help="With a RUN: the epoch to derive at (default: the chosen one).")
@click.option("--space", "space_file", type=click.Path(dir_okay=False),
              help="Evaluation settings for parameter counts (default: the run's space, or "
                   "spaces/msr.space's CIFAR settings).")
@click.option("--no-counts", is_flag=True, help="Skip parameters and mult-adds (faster).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object for scripts.")
def command(items: tuple[str, ...], criteria: str | None, epoch: int | None,
            space_file: str | None, no_counts: bool, as_json: bool) -> None:
    """Compare the rules named by --criteria on the run directory RUN, or genotypes G1 G2 ...
    (files or names in genotypes/)."""
    from msrdsl.errors import MsrdslError

    if len(items) == 1 and Path(items[0]).is_dir():
        comparison = _compare_run(items[0], criteria, epoch, space_file, not no_counts)
    else:
        if criteria or epoch is not None:
            raise MsrdslError("--criteria and --epoch apply to a run directory",
                              hint=f"'{items[0]}' is not a folder")
        if len(items) < 2:
            raise MsrdslError("compare needs a run directory or at least two genotypes")
        comparison = _compare_genotypes(items, space_file, not no_counts)
    if as_json:
        print_json(comparison.to_json())
    else:
        from msrdsl.render import render_comparison

        console.print(render_comparison(comparison))


def _compare_genotypes(items: tuple[str, ...], space_file: str | None, counts: bool):
    from msrdsl.comparison import Comparison
    from msrdsl.genotype_io import load_genotype

    genotypes = [load_genotype(item) for item in items]
    labels = _unique([g.name for g in genotypes])
    return Comparison.of(labels, genotypes, eval_space=_eval_space(space_file, None),
                         counts=counts)


def _compare_run(path: str, criteria: str | None, epoch: int | None, space_file: str | None,
                 counts: bool):
    from msrdsl.comparison import Comparison
    from msrdsl.criteria import rule_tables
    from msrdsl.runs import Run

    run = Run(path)
    names = criteria.split(",") if criteria else _default_rules(run)
    rules = [run.rule(n.strip()) for n in names if n.strip()]
    rec = run.record(epoch)
    genotypes, scores, sources = [], {}, {}
    for rule in rules:
        g, source = run.genotype(rule, rec["epoch"])
        genotypes.append(g)
        sources[rule.name] = source
        scores[rule.name] = _rule_scores(run, rule, rec["epoch"], rule_tables)
    return Comparison.of([r.name for r in rules], genotypes, scores=scores, epoch=rec["epoch"],
                         eval_space=_eval_space(space_file, run.space), counts=counts,
                         derived_from=sources)


def _rule_scores(run, rule, epoch: int, rule_tables) -> dict[str, Any]:
    """Per cell type: the op-choice table and the edge strengths of a rule at `epoch`."""
    from msrdsl.criteria import ScoreContext
    from msrdsl.errors import SpaceError

    try:
        ctx = ScoreContext.from_record(run.space, run.record(epoch).get("scores", {}))
        per_type = rule_tables(ctx, rule)
    except SpaceError:
        per_type = rule_tables(run.score_context(epoch), rule)
    return {t: {"op": ops.tolist(), "edge": edges.tolist()} for t, (ops, edges) in per_type.items()}


def _default_rules(run) -> list[str]:
    """The run's own rules, then MSR, max-stable-rank and DARTS where the space allows them."""
    from msrdsl.lang.validate import mixes_alpha

    s = run.space
    names = [s.selected_rule.name, *s.select.record]
    for extra in ("msr", "msr_max", "darts"):
        if extra == "darts" and not mixes_alpha(s):
            continue
        if extra in ("msr", "msr_max") and not _has_convs(s):
            continue
        if extra not in names:
            names.append(extra)
    return names


def _has_convs(space) -> bool:
    from msrdsl.oplib import last_conv, resolve_op

    ops = {o.name: o for o in space.ops}
    return all(last_conv(resolve_op(ops, name, 1)) is not None for name in space.operators)


def _eval_space(space_file: str | None, fallback):
    if space_file:
        from msrdsl.lang import load_space

        return load_space(space_file)
    return fallback


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out
