"""`msrdsl import FILE`: a genotype in DARTS notation or JSON -> the .genotype language."""

from __future__ import annotations

from pathlib import Path

import click

from msrdsl.cli.console import console


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", help="Pick one genotype from a file that holds several.")
@click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False),
              help="Write NAME.genotype files into this folder instead of printing.")
@click.option("--force", is_flag=True, help="Replace existing .genotype files.")
def command(file: str, name: str | None, out_dir: str | None, force: bool) -> None:
    """Convert FILE (DARTS namedtuple notation or JSON) to .genotype text; every genotype in a
    .py/.txt file unless --name picks one."""
    from msrdsl.errors import MsrdslError
    from msrdsl.genotype_io import load_genotype, read_darts_genotypes
    from msrdsl.lang import format_genotype, read_text

    path = Path(file)
    if path.suffix in (".py", ".txt") and name is None:
        found = read_darts_genotypes(read_text(path), str(path))
        genotypes = list(found.values()) or [load_genotype(file)]
    else:
        genotypes = [load_genotype(f"{file}:{name}" if name else file)]
    header = (f"# imported from {path.name} by msrdsl import",)
    if out_dir is None:
        click.echo("\n".join(format_genotype(g, header) for g in genotypes), nl=False)
        return
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    from msrdsl.cli.files import write_atomic

    for g in genotypes:
        target = folder / f"{g.name}.genotype"
        if target.exists() and not force:
            raise MsrdslError(f"{target} exists", hint="pass --force to replace it")
        write_atomic(target, format_genotype(g, header))
        console.print(f"wrote {target}")
