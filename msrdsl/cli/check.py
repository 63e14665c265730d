"""`msrdsl check FILE...`: validate spaces and genotypes; summarise each valid one."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from msrdsl.cli.console import USER_ERROR, console, print_error
from msrdsl.cli.files import kind_of
from msrdsl.errors import GenotypeError, MsrdslError, did_you_mean


@click.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
              help="Override a setting of every .space file, e.g. search.epochs=5.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors.")
def command(files: tuple[str, ...], overrides: tuple[str, ...], quiet: bool) -> None:
    """Validate .space and .genotype files (exit code 2 if any is invalid)."""
    failed = 0
    for path in files:
        try:
            summary = _check_one(path, overrides)
        except MsrdslError as err:
            print_error(err)
            failed += 1
            continue
        if not quiet:
            # A one-line summary is not wrapped (a long path would break across lines).
            console.print(summary, soft_wrap=isinstance(summary, str))
    if failed:
        raise click.exceptions.Exit(USER_ERROR)


def _check_one(path: str, overrides: tuple[str, ...]):
    from msrdsl.lang import load_space, parse_genotype_file

    if kind_of(path) == "space":
        return space_summary(load_space(path, overrides), path)
    genotype = parse_genotype_file(path)
    _validate_genotype(genotype)
    return genotype_summary(genotype, path)


def _validate_genotype(genotype) -> None:
    """A genotype's structure, and its operators against the prelude's (what any space can use)."""
    from msrdsl.lang.interpret import prelude_ops

    known = [name for name, op in prelude_ops().items() if not op.params]
    try:
        from msrdsl.genotype_io import validate_genotype
    except ImportError:
        validate_genotype = None
    if validate_genotype is not None:
        validate_genotype(genotype, known_ops=known)
        return
    for cell in (genotype.normal, genotype.reduce):
        for node in cell.nodes:
            for edge in node.edges:
                if edge.op not in known:
                    raise GenotypeError(f"unknown operator '{edge.op}'", edge.loc,
                                        did_you_mean(edge.op, known))


def space_summary(space, path: str) -> Table:
    """The space at a glance: operators, cell, network, mixing, constraint, rule, training."""
    from msrdsl.lang import format_value
    from msrdsl.ir import Rule

    s = space
    table = Table(title=f"[bold]{s.name}[/] ({escape(path)}) ok", title_justify="left", show_header=False,
                  box=None, pad_edge=False)
    table.add_column(style="cyan", no_wrap=True)
    table.add_column()
    reductions = ", ".join(str(i) for i in s.network.reduction_indices()) or "none"
    constraint = "none"
    if s.supernet.spectral_norm is not None:
        sn = s.supernet.spectral_norm
        constraint = (f"spectral norm {sn.bound:g}, "
                      + (f"power iteration x{sn.power_iterations}" if sn.method == "power" else "exact"))
    rule = s.selected_rule
    rule_text = (f"{rule.name}: op {rule.op.direction} {format_value(rule.op.score)}; "
                 f"edge {rule.edge.direction} {format_value(rule.edge.score)}")
    if rule.exclude:
        rule_text += f"; exclude {', '.join(rule.exclude)}"
    opt = s.search.optimizer
    rows = [
        ("data", f"{s.dataset.name}, split {format_value(s.dataset.split)}"),
        ("operators", ", ".join(s.operators)),
        ("cell", f"{s.cell.inputs} inputs, {s.cell.nodes} nodes, keep {s.cell.keep}, "
                 f"{s.cell.edges} mixed edges, output {s.cell.output}"),
        ("network", f"{s.network.cells} cells, {s.network.channels} channels, "
                    f"stem x{s.network.stem_multiplier}, reductions at cells {reductions}"),
        ("mixing", format_value(s.supernet.mix)),
        ("constraint", constraint),
        ("criterion", rule_text),
        ("epoch", s.select.epoch.rule + (f" (record {', '.join(s.select.record)})"
                                          if s.select.record else "")),
        ("search", f"{s.search.epochs} epochs, batch {s.search.batch}, {opt.kind} lr {opt.lr:g}"
                   f" {opt.schedule} to {opt.lr_min:g}, wd {opt.weight_decay:g}, "
                   f"clip {s.search.grad_clip:g}, seed {s.search.seed}"),
        ("evaluate", f"{s.evaluate.net}: {s.evaluate.cells} cells, {s.evaluate.channels} channels,"
                     f" {s.evaluate.epochs} epochs, batch {s.evaluate.batch}"),
    ]
    if isinstance(s.select.rule, Rule):
        rows[6] = ("criterion", rule_text.replace(f"{rule.name}:", "inline:", 1))
    for key, value in rows:
        table.add_row(key, value)
    return table


def genotype_summary(genotype, path: str) -> str:
    normal, reduce = genotype.normal, genotype.reduce
    return (f"[bold]{genotype.name}[/] ({escape(path)}) ok: normal cell {len(normal.nodes)} nodes, "
            f"{len(normal.ops)} edges; reduction cell {len(reduce.nodes)} nodes, "
            f"{len(reduce.ops)} edges")
