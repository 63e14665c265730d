"""The genotype commands as a user runs them: show, import, compare (genotypes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msrdsl.cli import cli
from msrdsl.cli.console import run_guarded
from msrdsl.genotype_io import genotype_names, load_genotype
from msrdsl.lang import parse_genotype

SNAPSHOTS = Path(__file__).parent / "snapshots"
REFERENCE = Path(__file__).parent / "data" / "published-genotypes.txt"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = run_guarded(cli, list(argv), debug=False)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_show_draws_both_cells_like_the_snapshot(capsys):
    code, out, err = run(capsys, "show", "msr_darts")
    assert code == 0, err
    # The cells are drawn as in the renderer's snapshot; the heading names the shipped file's source.
    cells = (SNAPSHOTS / "render_msr_darts.txt").read_text()
    assert out.startswith("msr_darts")
    assert out[out.index("╭"):] == cells[cells.index("╭"):]


@pytest.mark.parametrize("fmt", ["darts", "json", "genotype", "dot"])
def test_show_formats_round_trip(capsys, fmt):
    code, out, err = run(capsys, "show", "darts_v2", "--format", fmt)
    assert code == 0, err
    g = load_genotype("darts_v2")
    if fmt == "json":
        assert json.loads(out)["name"] == "darts_v2"
    elif fmt == "genotype":
        assert parse_genotype(out) == g
    elif fmt == "darts":
        assert out.startswith("darts_v2 = Genotype(normal=[('sep_conv_3x3', 0)")
    else:
        assert out.startswith("digraph") and "sep_conv_3x3" in out


def test_show_unknown_name_is_a_user_error(capsys):
    code, out, err = run(capsys, "show", "msr_dart")
    assert code == 2
    assert "unknown genotype 'msr_dart'" in err and "did you mean 'msr_darts'?" in err
    assert "Traceback" not in err


def test_show_png_without_output_file(capsys):
    code, _, err = run(capsys, "show", "msr_darts", "--format", "png")
    assert code == 2 and "-o FILE.png" in err


def test_import_every_published_genotype(capsys, tmp_path):
    code, out, err = run(capsys, "import", str(REFERENCE), "--out", str(tmp_path))
    assert code == 0, err
    written = sorted(p.name for p in tmp_path.glob("*.genotype"))
    assert len(written) == 7
    # The shipped files hold the same cells as the imported ones.
    shipped = {load_genotype(n).normal for n in genotype_names()}
    for path in tmp_path.glob("*.genotype"):
        assert load_genotype(str(path)).normal in shipped
    # Importing again does not overwrite without --force.
    code, _, err = run(capsys, "import", str(REFERENCE), "--out", str(tmp_path))
    assert code == 2 and "--force" in err


def test_compare_genotypes_marks_differences(capsys):
    code, out, err = run(capsys, "compare", "darts_v1", "darts_v2", "--no-counts")
    assert code == 0, err
    normal = out[:out.index("reduction cell")]
    lines = {"".join(line.split()[:3]): line for line in normal.splitlines() if "->" in line}
    assert lines["2->5"].rstrip().endswith("*")  # skip_connect vs dil_conv_3x3
    assert not lines["0->2"].rstrip().endswith("*")
    assert "normal depth" in out and "4C" in out


def test_compare_json(capsys):
    code, out, err = run(capsys, "compare", "darts_v2", "msr_darts", "--no-counts", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["shape"]["msr_darts"]["normal"]["depth"] == 3
    assert [2, 5] in data["differs"]["normal"]


def test_compare_needs_two_genotypes(capsys):
    code, _, err = run(capsys, "compare", "darts_v2")
    assert code == 2 and "at least two genotypes" in err
