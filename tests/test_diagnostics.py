"""Golden diagnostics: every malformed input in tests/diagnostics/ gives exactly its message.

Each `NAME.space`, `NAME.genotype` (or other file) with a `NAME.expected` beside it is checked
with `msrdsl check NAME...` from inside that folder, so paths in messages are stable; the whole
stderr (location, message, source line, caret, hint) must equal the expected file, and the exit
code must be 2. `--set` diagnostics are inline below.

To rewrite the expected files after an intended change of wording, run
`MSRDSL_REGOLD=1 pytest tests/test_diagnostics.py` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from msrdsl.cli import cli
from msrdsl.cli.console import run_guarded
from msrdsl.errors import MsrdslError
from msrdsl.lang import load_space

HERE = Path(__file__).parent / "diagnostics"
CASES = sorted(p.stem for p in HERE.glob("*.expected"))
REGOLD = bool(os.environ.get("MSRDSL_REGOLD"))


def _input(stem: str) -> str:
    found = [p.name for p in HERE.iterdir() if p.stem == stem and p.suffix != ".expected"]
    assert len(found) == 1, f"{stem}: expected one input file beside {stem}.expected, found {found}"
    return found[0]


def _check(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    monkeypatch.chdir(HERE)
    code = run_guarded(cli, ["check", "-q", *args], debug=False)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_there_are_enough_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("stem", CASES)
def test_golden(stem, capsys, monkeypatch):
    code, out, err = _check(capsys, monkeypatch, _input(stem))
    expected_path = HERE / f"{stem}.expected"
    if REGOLD:
        expected_path.write_text(err, encoding="utf-8")
    assert (code, out) == (2, "")
    assert err == expected_path.read_text(encoding="utf-8")
    assert "Traceback" not in err


# `--set` overrides: (arguments, expected stderr). The override text is the source line.
SET_CASES = {
    "no equals sign": (
        ["--set", "search.epochs"],
        "--set:1:1: error: '--set search.epochs' is not of the form path.to.key=value\n"
        "  search.epochs\n"
        "  ^~~~~~~~~~~~~\n"
        "  hint: for example: --set search.epochs=5\n"),
    "not a number": (
        ["--set", "search.epochs=abc"],
        "--set:1:15: error: 'epochs' must be a whole number, got abc\n"
        "  search.epochs=abc\n"
        "                ^~~\n"),
    "unknown path": (
        ["--set", "search.epoch=5"],
        "--set:1:8: error: unknown setting 'epoch' in search\n"
        "  search.epoch=5\n"
        "         ^~~~~\n"
        "  hint: did you mean 'epochs'?\n"),
    "unknown section": (
        ["--set", "serach.epochs=5"],
        "--set:1:1: error: unknown setting 'serach' in a space\n"
        "  serach.epochs=5\n"
        "  ^~~~~~\n"
        "  hint: did you mean 'search'?\n"),
    "no value": (
        ["--set", "search.epochs="],
        "--set:1:15: error: '--set search.epochs=' gives no value after '='\n"
        "  search.epochs=\n"
        "                ^\n"
        "  hint: for example: --set search.epochs=5\n"),
    "syntax error in the value": (
        ["--set", "network.reduce_at=[1/3,, 2/3]"],
        "--set:1:24: error: unexpected ','; expected a name, a number, a quoted string, '(', "
        "'-', '[', ']'\n"
        "  network.reduce_at=[1/3,, 2/3]\n"
        "                         ^\n"),
    "value ends early": (
        ["--set", "network.reduce_at=[1/3,"],
        "--set:1:23: error: the value ends early; expected a name, a number, a quoted string, "
        "'false', 'true', '(', '-', ...\n"
        "  network.reduce_at=[1/3,\n"
        "                        ^\n"),
    "a setting below a value": (
        ["--set", "cell.keep.max=3"],
        "--set:1:6: error: 'keep' takes a value, not a block\n"
        "  cell.keep.max=3\n"
        "       ^~~~\n"),
    "a rule that reads alpha": (
        ["--set", "select=darts"],
        "--set:1:8: error: rule 'darts' reads alpha, but this supernet's mix is uniform\n"
        "  select=darts\n"
        "         ^~~~~\n"
        "  hint: alpha exists only with `mix softmax(alpha)`\n"),
}


@pytest.mark.parametrize("name", sorted(SET_CASES))
def test_set_golden(name, capsys, monkeypatch):
    args, expected = SET_CASES[name]
    code, out, err = _check(capsys, monkeypatch, *args, "../../spaces/msr.space")
    assert (code, out, err) == (2, "", expected)


def test_errors_from_the_api_render_the_same(monkeypatch):
    """`load_space` raises what `check` prints: one MsrdslError, rendered the same way."""
    monkeypatch.chdir(HERE)
    with pytest.raises(MsrdslError) as info:
        load_space("unknown_operator.space")
    assert info.value.render() + "\n" == (HERE / "unknown_operator.expected").read_text()


def test_every_input_has_an_expectation():
    inputs = {p.stem for p in HERE.iterdir() if p.suffix != ".expected"}
    # The second file of the `extends` cycle and the folder exist for other cases' sake.
    helpers = {"extends_cycle_b", "folder"}
    assert inputs - set(CASES) <= helpers


def test_every_terminal_of_the_grammar_reads_as_words():
    """No Lark terminal name (RBRACE, __ANON_0, $END) reaches a message."""
    from msrdsl.lang.syntax import _expected, _parser

    for terminal in [*(t.name for t in _parser().terminals), "$END"]:
        shown = _expected({terminal})
        assert shown.startswith(("'", "a ", "the ")), (terminal, shown)
        assert terminal not in shown or shown == f"'{terminal.lower()}'", (terminal, shown)


@pytest.mark.parametrize("stem,kind", [
    ("unclosed_brace", "SpaceSyntaxError"), ("single_quoted", "SpaceSyntaxError"),
    ("bad_escape", "SpaceSyntaxError"), ("unknown_setting", "SpaceError"),
    ("extends_missing", "SpaceError"), ("not_utf8", "SpaceError"),
    ("genotype_misnumbered", "GenotypeError"), ("genotype_unexpected_token", "SpaceSyntaxError"),
])
def test_error_classes(stem, kind, monkeypatch):
    from msrdsl.lang import parse_genotype_file

    monkeypatch.chdir(HERE)
    name = _input(stem)
    with pytest.raises(MsrdslError) as info:
        (parse_genotype_file if name.endswith(".genotype") else load_space)(name)
    assert type(info.value).__name__ == kind
