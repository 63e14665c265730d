"""`msrdsl plot RUN -o FILE.png`: a search's losses and stable ranks over the epochs."""

from __future__ import annotations

import click

from msrdsl.cli.console import console


@click.command("plot")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="Image file to write (.png, .svg or .pdf).")
def command(run_dir: str, output: str) -> None:
    """Plot train/valid loss per epoch (the chosen epoch marked) and the mean stable rank of each
    operator per cell type over the epochs."""
    from msrdsl.plots import plot_run
    from msrdsl.runs import Run

    path = plot_run(Run(run_dir), output)
    console.print(f"wrote {path}")
