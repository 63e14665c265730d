"""`msrdsl fmt FILE`: the canonical layout of a .space or .genotype file."""

from __future__ import annotations

import click

from msrdsl.cli.console import console
from msrdsl.cli.files import kind_of, write_atomic
from msrdsl.errors import MsrdslError


@click.command("fmt")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--write", "-w", is_flag=True, help="Rewrite the file in place.")
@click.option("--flatten", is_flag=True,
              help="Resolve `extends` and write every setting explicitly (spaces only).")
def command(file: str, write: bool, flatten: bool) -> None:
    """Print FILE in canonical layout (parsing the result gives the same meaning)."""
    if write and flatten:
        raise MsrdslError("--write with --flatten would replace the file's `extends` by its "
                          "parent's settings", hint="redirect the flattened output to a new file")
    text = formatted(file, flatten)
    if write:
        from msrdsl.lang import read_text

        if read_text(file) != text:
            write_atomic(file, text)
            console.print(f"reformatted {file}")
    else:
        click.echo(text, nl=False)


def formatted(path: str, flatten: bool = False) -> str:
    """The canonical text of a file; refuses to return text that would lose a comment."""
    from msrdsl.lang import (format_file, format_genotype, format_space, header_comments,
                             parse_genotype, parse_space_syntax, read_text, space_from_syntax)

    source = read_text(path)
    if kind_of(path) == "genotype":
        if flatten:
            raise MsrdslError("--flatten applies to .space files only")
        text = format_genotype(parse_genotype(source, path), header_comments(source))
    else:
        syntax = parse_space_syntax(source, path)
        space = space_from_syntax(syntax)  # a file is laid out only once it is valid
        text = format_space(space) if flatten else format_file(syntax)
    if not flatten:
        _keep_comments(source, text, path)
    return text


def _keep_comments(source: str, text: str, path: str) -> None:
    from msrdsl.lang.syntax import comments_of

    kept = {body for _, _, body in comments_of(text)}
    lost = [body for _, _, body in comments_of(source) if body not in kept]
    if lost:
        raise MsrdslError(f"{path}: formatting would drop the comment {lost[0]!r}",
                          hint="move it onto its own line before an entry")
