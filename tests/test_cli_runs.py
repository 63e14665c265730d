"""`derive`, `compare` and `plot` on a small trained run agree with what the run recorded."""

from __future__ import annotations

import json

import pytest

from msrdsl.genotype_io import from_json
from msrdsl.lang import parse_genotype, parse_genotype_file
from test_search_support import DARTS, DIGITS, QUICKSTART, records, run_cli, sets


def cells(g):
    return (g.normal, g.reduce)


@pytest.fixture(scope="module")
def msr_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "msr"
    from msrdsl.cli import cli
    from msrdsl.cli.console import run_guarded

    code = run_guarded(cli, ["search", QUICKSTART, "--out", str(out), "--quiet",
                             *sets("search.epochs=2", "search.batch=128", base=DIGITS)], debug=False)
    assert code == 0
    return out


def test_derive_reproduces_the_runs_own_genotype(msr_run, capsys):
    code, out, err = run_cli(capsys, "derive", str(msr_run), "--format", "genotype")
    assert code == 0, err
    assert cells(parse_genotype(out)) == cells(parse_genotype_file(msr_run / "final.genotype"))


def test_derive_any_epoch_and_rule_matches_the_record(msr_run, capsys):
    for rec in records(msr_run):
        code, out, err = run_cli(capsys, "derive", str(msr_run), "--criterion", "msr_max",
                                 "--epoch", str(rec["epoch"]), "--format", "json")
        assert code == 0, err
        assert cells(from_json(json.loads(out))) == cells(from_json(rec["rules"]["msr_max"]["genotype"]))


def test_compare_lists_the_recorded_genotype_of_each_rule(msr_run, capsys):
    code, out, err = run_cli(capsys, "compare", str(msr_run), "--criteria", "msr,msr_max",
                             "--no-counts", "--json")
    assert code == 0, err
    data = json.loads(out)
    rec = next(r for r in records(msr_run) if r["epoch"] == data["epoch"])
    for rule in ("msr", "msr_max"):
        assert cells(from_json(data["genotypes"][rule])) == cells(from_json(rec["rules"][rule]["genotype"]))
    tau = data["kendall_tau"]["msr vs msr_max"]
    assert -1 <= tau["normal"] <= 1 and -1 <= tau["reduce"] <= 1
    assert set(data["shape"]["msr"]) == {"normal", "reduce"}


def test_compare_in_the_terminal_shows_tau_and_shape(msr_run, capsys):
    code, out, err = run_cli(capsys, "compare", str(msr_run), "--no-counts")
    assert code == 0, err
    assert "msr_max" in out and "Kendall's tau" in out and "normal depth" in out


def test_unknown_rule_and_epoch_are_user_errors(msr_run, capsys):
    code, _, err = run_cli(capsys, "derive", str(msr_run), "--criterion", "msr_mx")
    assert code == 2 and "did you mean 'msr_max'?" in err
    code, _, err = run_cli(capsys, "derive", str(msr_run), "--epoch", "99")
    assert code == 2 and "no epoch 99" in err
    code, _, err = run_cli(capsys, "derive", str(msr_run.parent / "nowhere"))
    assert code == 2 and "no run directory" in err


def test_plot_writes_a_png(msr_run, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "run.png"
    code, _, err = run_cli(capsys, "plot", str(msr_run), "-o", str(target))
    assert code == 0, err
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
