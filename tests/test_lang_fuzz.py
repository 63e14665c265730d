"""Whatever a user types, the language answers with an `MsrdslError` and nothing else.

Inputs: random sequences of the grammar's terminals, well-formed spaces with random keys and
values, and mutations (deleted, duplicated, swapped, inserted tokens; deleted, inserted, replaced
characters and bytes; truncation; invalid UTF-8) of the shipped spaces and genotypes and of
generated valid texts. Every error must render, start with `path:line:col: ` when it has a
location, quote the line with a caret under it, and name no Lark terminal.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msrdsl.cli.fmt import formatted
from msrdsl.errors import MsrdslError, SpaceSyntaxError
from msrdsl.lang import (
    format_file,
    format_genotype,
    format_space,
    load_space,
    parse_genotype,
    parse_genotype_file,
    parse_genotypes,
    parse_space,
    parse_space_syntax,
    parse_value,
)
from msrdsl.lang.syntax import _parser
from msrdsl.testing import (
    byte_mutations,
    entry_texts,
    genotype_texts,
    mutations,
    space_texts,
    token_soups,
)

ROOT = Path(__file__).resolve().parent.parent
SPACES = {p.name: p.read_text() for p in sorted((ROOT / "spaces").glob("*.space"))}
GENOTYPES = {p.name: p.read_text() for p in sorted((ROOT / "genotypes").glob("*.genotype"))}
TERMINALS = sorted({t.name for t in _parser().terminals} | {"$END"})
_RAW_NAME = re.compile(r"__ANON|\$END|\b(" + "|".join(re.escape(t) for t in TERMINALS) + r")\b")


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def check_error(err: MsrdslError) -> None:
    """An error a user can read: rendered, located as path:line:col, the line and its caret."""
    assert type(err).__module__ == "msrdsl.errors"
    text = err.render()
    assert isinstance(text, str) and text
    loc = err.loc
    if loc is not None and loc.line > 0:
        assert text.startswith(f"{loc.path}:{loc.line}:{loc.col}: {err.kind}: ")
        line = loc.source_line()
        if line is not None:
            lines = text.split("\n")
            assert lines[1] == "  " + line.rstrip()
            assert re.fullmatch(r"\s*\^~*", lines[2]), lines[2]
    elif loc is not None:
        assert text.startswith(f"{loc.path}: {err.kind}: ")
    if isinstance(err, SpaceSyntaxError):
        assert not _RAW_NAME.search(err.message), err.message


def only_our_errors(action, *args, **kwargs):
    """Run `action`; an MsrdslError is checked and swallowed, anything else fails the test."""
    try:
        return action(*args, **kwargs)
    except MsrdslError as err:
        check_error(err)
        return None


def space_pipeline(text: str, path: str) -> None:
    """Everything that reads a space: syntax, meaning, both printers, and printing back."""
    syntax = only_our_errors(parse_space_syntax, text, path)
    if syntax is None:
        return
    laid_out = format_file(syntax)
    space = only_our_errors(parse_space, text, path)
    if space is None:
        return
    # A valid text prints to valid text with the same meaning.
    assert parse_space(format_space(space), "<flat>") == space
    assert only_our_errors(parse_space, laid_out, path) == space


def genotype_pipeline(text: str, path: str = "fuzz.genotype") -> None:
    found = only_our_errors(parse_genotypes, text, path)
    if found:
        for g in found:
            assert parse_genotype(format_genotype(g), "<again>") == g
    only_our_errors(parse_genotype, text, path)


# ---------------------------------------------------------------------------------------------
# Text generated from the grammar


@fuzz(300)
@given(token_soups())
def test_token_soup(text):
    space_pipeline(text, "soup.space")
    genotype_pipeline(text)
    only_our_errors(parse_value, text, "--set")


@fuzz(150)
@given(entry_texts())
def test_well_formed_nonsense(text):
    space_pipeline(text, "nonsense.space")


@fuzz(80)
@given(space_texts().flatmap(mutations))
def test_mutated_generated_spaces(text):
    space_pipeline(text, "mutant.space")


@fuzz(120)
@given(genotype_texts().flatmap(mutations))
def test_mutated_generated_genotypes(text):
    genotype_pipeline(text)


# ---------------------------------------------------------------------------------------------
# Mutations of the shipped files


@fuzz(200)
@given(st.sampled_from(sorted(SPACES)).flatmap(
    lambda name: st.tuples(st.just(name), mutations(SPACES[name]))))
def test_mutated_shipped_spaces(case):
    name, text = case
    # Inside spaces/, so that `extends "msr.space"` still finds its parent.
    space_pipeline(text, str(ROOT / "spaces" / f"mutant-of-{name}"))


@fuzz(200)
@given(st.sampled_from(sorted(GENOTYPES)).flatmap(lambda name: mutations(GENOTYPES[name])))
def test_mutated_shipped_genotypes(text):
    genotype_pipeline(text)


# ---------------------------------------------------------------------------------------------
# Bytes through the file loader, and `--set` overrides


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A copy of spaces/ to write mutants into, beside the parents they extend."""
    out = tmp_path_factory.mktemp("fuzz")
    for name, text in SPACES.items():
        (out / name).write_text(text)
    return out


@fuzz(150)
@given(case=st.sampled_from(sorted(SPACES) + sorted(GENOTYPES)).flatmap(
    lambda name: st.tuples(st.just(name), byte_mutations(
        (SPACES.get(name) or GENOTYPES[name]).encode("utf-8")))))
def test_mutated_bytes_through_the_file_loader(folder, case):
    name, data = case
    suffix = Path(name).suffix
    path = folder / f"mutant{suffix}"
    path.write_bytes(data)
    if suffix == ".space":
        only_our_errors(load_space, path)
    else:
        only_our_errors(parse_genotype_file, path)
    only_our_errors(formatted, str(path))


_SETTING_PATHS = ["search.epochs", "select", "select.op", "select.edge", "select.epoch",
                  "supernet.spectral_norm", "supernet.mix", "dataset", "dataset.root",
                  "network.reduce_at", "cell", "cell.keep", "operators", "evaluate.dataset.split",
                  "search.arch.optimizer.betas", "nope", "cell.keep.deeper"]


@fuzz(150)
@given(st.tuples(st.sampled_from(_SETTING_PATHS), st.sampled_from(["=", "", " = ", "=="]),
                 st.one_of(token_soups(6), st.sampled_from(
                     ["5", "off", "msr_max", '"/x"', "[1/3, 2/3]", "softmax(alpha)",
                      "argmin(alpha)", "-1", "1e999", "[", "{"]))).map("".join))
def test_random_overrides(override):
    only_our_errors(parse_space, SPACES["msr.space"], str(ROOT / "spaces" / "msr.space"),
                    [override])


def test_the_checker_itself_catches_a_stray_exception():
    """`only_our_errors` lets anything but MsrdslError through (so the properties can fail)."""
    def boom(*_):
        raise KeyError("x")

    with pytest.raises(KeyError):
        only_our_errors(boom)
