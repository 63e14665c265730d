"""`msrdsl stats GENOTYPE`: parameters and mult-adds of a genotype's evaluation network."""

from __future__ import annotations

import click

from msrdsl.cli.console import console, print_json

NETS = ("cifar", "imagenet")


@click.command("stats")
@click.argument("genotype")
@click.option("--net", type=click.Choice(NETS), default="cifar", show_default=True,
              help="Network style: DARTS NetworkCIFAR (32x32) or NetworkImageNet (224x224).")
@click.option("--cells", type=click.IntRange(min=1), default=None,
              help="Cells  [default: 20 cifar, 14 imagenet]")
@click.option("--channels", type=click.IntRange(min=1), default=None,
              help="Initial channels  [default: 36 cifar, 48 imagenet]")
@click.option("--classes", type=click.IntRange(min=1), default=None,
              help="Classes  [default: 10 cifar, 1000 imagenet]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def stats(genotype: str, net: str, cells: int | None, channels: int | None, classes: int | None,
          as_json: bool) -> None:
    """Parameters (without and with the auxiliary tower) and mult-adds of GENOTYPE's network.

    GENOTYPE is a .genotype/.json/.py file or a name in genotypes/. Parameters without the
    auxiliary tower are what papers report.
    """
    from msrdsl.genotype_io import load_genotype
    from msrdsl.nn.counts import count_genotype
    from msrdsl.nn.evalnet import DEFAULTS

    g = load_genotype(genotype)
    d_cells, d_channels, d_classes, size = DEFAULTS[net]
    cells = d_cells if cells is None else cells
    channels = d_channels if channels is None else channels
    classes = d_classes if classes is None else classes
    counts = count_genotype(g, None, net=net, cells=cells, channels=channels, classes=classes)
    result = {"genotype": g.name, "net": net, "cells": cells, "channels": channels,
              "classes": classes, "input_size": size, "params": counts["params"],
              "params_with_auxiliary": counts["params_aux"], "mult_adds": counts["mult_adds"]}
    if as_json:
        print_json(result)
        return
    from rich.table import Table

    table = Table(title=f"{g.name}: {net}, {cells} cells, {channels} channels, {classes} classes",
                  title_justify="left", show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column(justify="right", style="dim")
    table.add_row("params", f"{counts['params']:,}", f"{counts['params'] / 1e6:.2f} M")
    table.add_row("params with auxiliary", f"{counts['params_aux']:,}",
                  f"{counts['params_aux'] / 1e6:.2f} M")
    table.add_row(f"mult-adds ({size}x{size})", f"{counts['mult_adds']:,}",
                  f"{counts['mult_adds'] / 1e6:.0f} M")
    console.print(table)
