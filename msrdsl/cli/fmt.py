"""`msrdsl fmt FILE`: the canonical layout of a .space or .genotype file."""

from __future__ import annotations

from collections import Counter

import click

from msrdsl.cli.console import console
from msrdsl.cli.files import kind_of, write_atomic
from msrdsl.errors import Location, MsrdslError


@click.command("fmt")
@click.argument("file", type=click.Path())
@click.option("--write", "-w", is_flag=True, help="Rewrite the file in place (only if it changes).")
@click.option("--flatten", is_flag=True,
              help="Resolve `extends` and write every setting explicitly (spaces only).")
def command(file: str, write: bool, flatten: bool) -> None:
    """Print FILE in canonical layout (parsing the result gives the same meaning)."""
    if write and flatten:
        raise MsrdslError("--write with --flatten would replace the file's `extends` by its "
                          "parent's settings", hint="redirect the flattened output to a new file")
    from msrdsl.lang import read_text

    source = read_text(file)
    text = formatted(file, flatten, source)
    if write:
        if source != text:
            write_atomic(file, text)
            console.print(f"reformatted {file}", markup=False, highlight=False, soft_wrap=True)
    else:
        click.echo(text, nl=False)


def formatted(path: str, flatten: bool = False, source: str | None = None) -> str:
    """The canonical text of a file; refuses to return text that would lose a comment."""
    from msrdsl.lang import (format_file, format_genotype, format_space, header_comments,
                             parse_genotype, parse_space_syntax, read_text, space_from_syntax)

    kind = kind_of(path)
    if source is None:
        source = read_text(path)
    if kind == "genotype":
        if flatten:
            raise MsrdslError("--flatten applies to .space files only", Location.whole_file(path))
        text = format_genotype(parse_genotype(source, path), header_comments(source))
    else:
        syntax = parse_space_syntax(source, path)
        space = space_from_syntax(syntax)  # a file is laid out only once it is valid
        text = format_space(space) if flatten else format_file(syntax)
    if not flatten:
        _keep_comments(source, text, path)
    return text


def _keep_comments(source: str, text: str, path: str) -> None:
    """Refuse, at the comment, a layout that would lose one (a genotype keeps only its header)."""
    from msrdsl.lang.syntax import comments_of

    kept = Counter(body for _, _, body in comments_of(text))
    for line, col, body in comments_of(source):
        if kept[body] > 0:
            kept[body] -= 1
            continue
        raise MsrdslError("formatting would drop this comment",
                          Location(path, line, col, line, col + len(body), source),
                          "a genotype keeps only the comments at the top of its file; "
                          "move it there" if path.endswith(".genotype")
                          else "move it onto its own line before an entry")
