"""`msrdsl derive RUN`: the genotype any rule picks on a run's trained supernet, no training."""

from __future__ import annotations

import click

from msrdsl.cli.console import console, print_json


@click.command("derive")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--criterion", "-c", "rule_name", help="A rule name (the run's, or the prelude's "
              "msr, msr_max, darts); default: the run's own rule.")
@click.option("--space", "space_file", type=click.Path(dir_okay=False),
              help="Use the rule this .space file selects (its own rules included).")
@click.option("--epoch", type=int, help="Derive at this epoch (default: the run's chosen epoch).")
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="Write a .genotype file.")
@click.option("--format", "-f", "fmt", type=click.Choice(["text", "genotype", "json", "darts"]),
              default="text", show_default=True)
def command(run_dir: str, rule_name: str | None, space_file: str | None, epoch: int | None,
            out: str | None, fmt: str) -> None:
    """Re-derive the architecture of RUN_DIR under any rule."""
    from msrdsl.errors import MsrdslError
    from msrdsl.genotype_io import to_darts, to_json
    from msrdsl.lang import format_genotype
    from msrdsl.render import render_genotype
    from msrdsl.runs import Run

    if rule_name and space_file:
        raise MsrdslError("give --criterion or --space, not both")
    run = Run(run_dir)
    rule = run.rule(space_file or rule_name or run.space.selected_rule.name)
    rec = run.record(epoch)
    genotype, source = run.genotype(rule, rec["epoch"])
    genotype = type(genotype)(f"{run.space.name}_{rule.name}_epoch{rec['epoch']}", genotype.normal,
                              genotype.reduce, f"msrdsl derive {run_dir} (rule {rule.name}, "
                              f"epoch {rec['epoch']})")
    header = (f"# derived by rule {rule.name} at epoch {rec['epoch']} of {run_dir}, "
              f"from the {source}",)
    if out:
        from msrdsl.cli.files import write_atomic

        write_atomic(out, format_genotype(genotype, header))
        console.print(f"wrote {out}")
    if fmt == "json":
        print_json(to_json(genotype))
    elif fmt == "darts":
        click.echo(to_darts(genotype))
    elif fmt == "genotype":
        click.echo(format_genotype(genotype, header), nl=False)
    elif not out:
        console.print(f"rule [bold]{rule.name}[/], epoch {rec['epoch']} (from the {source})")
        console.print(render_genotype(genotype))
