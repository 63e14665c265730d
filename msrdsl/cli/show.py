"""`msrdsl show GENOTYPE|NAME`: both cells in the terminal, or the genotype in another format."""

from __future__ import annotations

import click

from msrdsl.cli.console import console, print_json

FORMATS = ("text", "json", "darts", "genotype", "dot", "svg", "png")


@click.command("show")
@click.argument("genotype")
@click.option("--format", "-f", "fmt", type=click.Choice(FORMATS), default="text",
              show_default=True, help="Terminal drawing, or an interchange/graph format.")
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="File to write (needed for svg and png).")
def command(genotype: str, fmt: str, output: str | None) -> None:
    """Draw GENOTYPE (a .genotype/.json/.py file, or a name in genotypes/)."""
    from msrdsl.errors import MsrdslError
    from msrdsl.genotype_io import load_genotype, to_darts, to_json
    from msrdsl.lang import format_genotype
    from msrdsl.render import genotype_to_dot, render_genotype, render_svg_png

    g = load_genotype(genotype)
    if fmt in ("svg", "png"):
        if output is None:
            raise MsrdslError(f"--format {fmt} writes a file: give it with -o FILE.{fmt}")
        console.print(f"wrote {render_svg_png(g, output, fmt)}")
        return
    text = {
        "darts": lambda: to_darts(g) + "\n",
        "genotype": lambda: format_genotype(g),
        "dot": lambda: genotype_to_dot(g),
    }.get(fmt)
    if fmt == "json":
        if output:
            import json

            _write(output, json.dumps(to_json(g), indent=2) + "\n")
        else:
            print_json(to_json(g))
    elif text is not None:
        _write(output, text()) if output else click.echo(text(), nl=False)
    else:
        console.print(render_genotype(g))


def _write(path: str, text: str) -> None:
    from msrdsl.cli.files import write_atomic

    write_atomic(path, text)
    console.print(f"wrote {path}")
