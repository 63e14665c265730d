"""Round trips: parse(format(ir)) == ir for spaces and genotypes; `fmt` is idempotent on every
shipped file and keeps every comment where it was written."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msrdsl.cli.fmt import formatted
from msrdsl.lang import (
    format_file,
    format_genotype,
    format_space,
    load_prelude,
    load_space,
    parse_genotype,
    parse_genotype_file,
    parse_space,
    parse_space_syntax,
)
from msrdsl.lang.syntax import comments_of
from msrdsl.testing import genotype_texts, genotypes, spaces

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_SPACES = sorted((ROOT / "spaces").glob("*.space"))
SHIPPED_GENOTYPES = sorted((ROOT / "genotypes").glob("*.genotype"))


def fast(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


def _comments(text: str) -> Counter:
    return Counter(body for _, _, body in comments_of(text))


# ---------------------------------------------------------------------------------------------
# Spaces drawn from msrdsl.testing


@fast(80)
@given(spaces())
def test_space_round_trip(space):
    text = format_space(space)
    back = parse_space(text, "<roundtrip>")
    assert back == space
    # The printer is canonical: printing what it printed changes nothing, whichever printer.
    assert format_space(back) == text
    assert format_file(parse_space_syntax(text, "<roundtrip>")) == text


@fast(150)
@given(genotypes())
def test_genotype_round_trip(genotype):
    text = format_genotype(genotype)
    back = parse_genotype(text, "<roundtrip>")
    assert back == genotype
    assert format_genotype(back) == text


@fast(60)
@given(genotype_texts())
def test_genotype_fmt_is_idempotent_and_keeps_the_header(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("g") / "g.genotype"
    path.write_text(text, encoding="utf-8")
    once = formatted(str(path))
    assert once == text  # the printer's output is already canonical, header included
    assert parse_genotype(once, "<fmt>") == parse_genotype_file(path)


# ---------------------------------------------------------------------------------------------
# The shipped files


@pytest.fixture(scope="module")
def spaces_copy(tmp_path_factory) -> Path:
    """A copy of spaces/ so that formatted files can be parsed with their `extends`."""
    folder = tmp_path_factory.mktemp("spaces")
    for path in SHIPPED_SPACES:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.mark.parametrize("path", SHIPPED_SPACES, ids=lambda p: p.name)
def test_fmt_of_a_shipped_space_is_idempotent_and_keeps_comments(path, spaces_copy):
    copy = spaces_copy / path.name
    once = formatted(str(path))
    assert _comments(once) == _comments(path.read_text())
    copy.write_text(once)
    assert formatted(str(copy)) == once
    assert load_space(copy) == load_space(path)
    copy.write_text(path.read_text())


@pytest.mark.parametrize("path", SHIPPED_SPACES, ids=lambda p: p.name)
def test_flattened_shipped_space_round_trips(path):
    space = load_space(path)
    text = format_space(space)
    assert "extends" not in text
    back = parse_space(text, "<flat>")
    assert back == space
    assert format_space(back) == text


@pytest.mark.parametrize("path", SHIPPED_GENOTYPES, ids=lambda p: p.name)
def test_fmt_of_a_shipped_genotype_is_idempotent(path, tmp_path):
    once = formatted(str(path))
    assert _comments(once) == _comments(path.read_text())
    copy = tmp_path / path.name
    copy.write_text(once)
    assert formatted(str(copy)) == once
    assert parse_genotype_file(copy) == parse_genotype_file(path)


def test_prelude_layout_is_idempotent_and_keeps_comments():
    from importlib import resources

    source = resources.files("msrdsl.lang").joinpath("prelude.space").read_text()
    once = format_file(load_prelude())
    assert _comments(once) == _comments(source)
    assert format_file(parse_space_syntax(once, "<prelude>")) == once


# ---------------------------------------------------------------------------------------------
# Comments in every place a line can hold one

COMMENTED = """\
# header of the file
op strided {  # the op's header
  # before stride 1
  stride 1: relu | conv(3) | bn  # after stride 1
  stride 2: relu | conv(3, stride=2) | bn
  # end of the op
}  # after the op
op plain = relu | conv(5, stride=stride) | bn  # after a one-line op

# before the rule
rule mine {  # the rule's header
  op argmin(mean_over_cells(stable_rank(last_conv)))  # after op
  edge argmax(max_over_ops(-mean_over_cells(stable_rank(last_conv))))
  # end of the rule
}  # after the rule

# before the space
space commented {  # the space's header
  select mine {
    record [msr]
  }  # after select's brace
  network { cells 8 }  # after a one-line block
  # before cell
  cell {  # cell's header
    keep 2  # after keep
    # end of cell
  }
  operators [sep_conv_3x3,  # inside a list
             strided, plain]
  dataset cifar10 {}  # after an empty block
  # end of the space
}  # after the space
# the file's tail
"""

COMMENTED_CANONICAL = """\
# header of the file
op strided {  # the op's header
  # before stride 1
  stride 1: relu | conv(3) | bn  # after stride 1
  stride 2: relu | conv(3, stride=2) | bn
  # end of the op
}  # after the op

op plain = relu | conv(5, stride=stride) | bn  # after a one-line op

# before the rule
rule mine {  # the rule's header
  op argmin(mean_over_cells(stable_rank(last_conv)))  # after op
  edge argmax(max_over_ops(-mean_over_cells(stable_rank(last_conv))))
  # end of the rule
}  # after the rule

# before the space
space commented {  # the space's header
  dataset cifar10 {}  # after an empty block
  operators [sep_conv_3x3, strided, plain]  # inside a list
  # before cell
  cell {  # cell's header
    keep 2  # after keep
    # end of cell
  }
  network {
    cells 8
  }  # after a one-line block
  select mine {
    record [msr]
  }  # after select's brace
  # end of the space
}  # after the space

# the file's tail
"""


def test_comments_stay_where_they_were_written(tmp_path):
    path = tmp_path / "commented.space"
    path.write_text(COMMENTED)
    once = formatted(str(path))
    assert once == COMMENTED_CANONICAL
    path.write_text(once)
    assert formatted(str(path)) == once


_LINES = COMMENTED_CANONICAL.splitlines()
# The space's entries, each with its comments: (first line, last line + 1) in _LINES.
_CHUNKS = [(19, 20), (20, 21), (21, 26), (26, 29), (29, 32)]


@given(st.permutations(_CHUNKS))
@settings(max_examples=30, deadline=None)
def test_reordered_entries_keep_their_comments(chunks):
    """Entries move to schema order with their comments, whatever order they were written in."""
    body = [line for start, end in chunks for line in _LINES[start:end]]
    text = "\n".join([*_LINES[:19], *body, *_LINES[32:]]) + "\n"
    assert format_file(parse_space_syntax(text, "<perm>")) == COMMENTED_CANONICAL


def test_a_comment_in_a_genotype_body_is_refused_not_dropped(tmp_path):
    from msrdsl.errors import MsrdslError

    path = tmp_path / "c.genotype"
    text = SHIPPED_GENOTYPES[0].read_text().replace("  normal {", "  normal {  # kept?", 1)
    path.write_text(text)
    with pytest.raises(MsrdslError) as info:
        formatted(str(path))
    assert info.value.loc.line == text.splitlines().index(
        next(line for line in text.splitlines() if "# kept?" in line)) + 1
    assert "would drop this comment" in info.value.render()
