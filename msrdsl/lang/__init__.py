"""The .space and .genotype languages: parse, give meaning, validate, print."""

from msrdsl.lang.interpret import load_prelude, load_space, parse_space, read_text, space_from_syntax
from msrdsl.lang.printer import format_file, format_genotype, format_space, format_value
from msrdsl.lang.syntax import header_comments, parse_genotypes, parse_space_syntax, parse_value

from msrdsl.errors import GenotypeError, Location, SpaceError
from msrdsl.genotype import Genotype


def parse_genotype(text: str, path: str = "<genotype>") -> Genotype:
    """Parse the text of a .genotype file holding exactly one genotype."""
    found = parse_genotypes(text, path)
    if len(found) != 1:
        raise GenotypeError(f"expected one genotype in the file, found {len(found)}",
                            found[1].loc if len(found) > 1 else Location.whole_file(path))
    return found[0]


def parse_genotype_file(path) -> Genotype:
    """Read and parse a .genotype file."""
    try:
        text = read_text(path)
    except SpaceError as err:  # read_text raises SpaceError; a genotype file is a GenotypeError
        raise GenotypeError(err.message, err.loc, err.hint) from None
    return parse_genotype(text, str(path))


__all__ = [
    "format_file", "format_genotype", "format_space", "format_value", "header_comments",
    "load_prelude", "load_space", "parse_genotype", "parse_genotype_file", "parse_genotypes",
    "parse_space", "parse_space_syntax", "parse_value", "read_text", "space_from_syntax",
]
