"""`msrdsl search` end to end on tiny supernets: the run folder, the records, MSR and DARTS."""

from __future__ import annotations

import json
import math

import pytest
import torch

from msrdsl.genotype_io import from_json
from msrdsl.lang import load_space, parse_genotype_file
from test_search_support import DARTS, DIGITS, QUICKSTART, ROOT, records, run_cli, sets

MSR_REFERENCE = str(ROOT / "spaces" / "msr-reference.space")

EPOCH_FIELDS = {"epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "lr", "seconds",
                "rules", "scores"}


# Two epochs of nine steps on the embedded digits.
RUN = ("search.epochs=2", "search.batch=128")


def cells(g):
    return (g.normal, g.reduce)


@pytest.fixture(scope="module")
def msr_run(tmp_path_factory):
    """One tiny MSR-DARTS search on digits (the quick-start space made tiny), through the CLI."""
    out = tmp_path_factory.mktemp("msr") / "run"
    from msrdsl.cli import cli
    from msrdsl.cli.console import run_guarded

    code = run_guarded(cli, ["search", QUICKSTART, "--out", str(out), "--quiet",
                             *sets(*RUN, base=DIGITS)], debug=False)
    assert code == 0
    return out


def test_run_folder_layout(msr_run):
    names = {p.name for p in msr_run.iterdir()}
    assert {"space.space", "run.json", "epochs.jsonl", "checkpoint.pt", "weights",
            "final.genotype", "final.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    info = json.loads((msr_run / "run.json").read_text())
    assert info["seed"] == 2 and info["world_size"] == 1 and info["device"] == "cpu"
    assert info["torch"] == torch.__version__ and "python" in info and "msrdsl" in info
    # The flattened space as run re-loads to the space that was searched.
    space = load_space(msr_run / "space.space")
    assert space == load_space(QUICKSTART, sets(*RUN, base=DIGITS)[1::2])


def test_epoch_records(msr_run):
    recs = records(msr_run, drop=())
    assert [r["epoch"] for r in recs] == [0, 1]
    for r in recs:
        assert EPOCH_FIELDS <= set(r)
        assert 0 <= r["train_acc"] <= 1 and 0 <= r["valid_acc"] <= 1
        assert math.isfinite(r["train_loss"]) and math.isfinite(r["valid_loss"])
        # The space's rule and the recorded one, each with its genotype and score tables.
        assert set(r["rules"]) == {"msr", "msr_max"}
        for rule in r["rules"].values():
            from_json(rule["genotype"])
            assert len(rule["op_scores"]["normal"]) == 5  # edges of a 2-node cell
        # The base criterion per cell: 1 normal and 2 reduction cells, 5 edges, 4 operators.
        table = r["scores"]["stable_rank(last_conv)"]
        assert torch.tensor(table["normal"]).shape == (1, 5, 4)
        assert torch.tensor(table["reduce"]).shape == (2, 5, 4)
    # The cosine schedule from 0.025 towards 0.001 over 2 epochs: halfway at epoch 1.
    assert recs[0]["lr"] == 0.025 and recs[1]["lr"] == pytest.approx((0.025 + 0.001) / 2)


def test_final_genotype_is_the_chosen_epochs(msr_run):
    final = json.loads((msr_run / "final.json").read_text())
    recs = records(msr_run)
    from msrdsl.derive import epoch_choice

    chosen = epoch_choice([r["valid_loss"] for r in recs], "before_valid_loss_rises", 3)
    assert final["epoch"] == chosen and final["rule"] == "msr"
    genotype = parse_genotype_file(msr_run / "final.genotype")
    assert cells(genotype) == cells(from_json(recs[chosen]["rules"]["msr"]["genotype"]))
    header = (msr_run / "final.genotype").read_text().splitlines()[0]
    assert header.startswith("#") and str(msr_run) in header
    # The chosen epoch's and the last epoch's weights are kept.
    kept = sorted(p.name for p in (msr_run / "weights").iterdir())
    assert f"epoch-{chosen:03d}.pt" in kept and "epoch-001.pt" in kept


def test_records_rederive_with_the_runs_reader(msr_run):
    """Every recorded rule comes back from the record alone (what `msrdsl derive` does)."""
    from msrdsl.criteria import ScoreContext, derive_with_rule

    space = load_space(msr_run / "space.space")
    for r in records(msr_run):
        ctx = ScoreContext.from_record(space, r["scores"])
        for name in ("msr", "msr_max"):
            g = derive_with_rule(ctx, space.rule(name))
            assert cells(g) == cells(from_json(r["rules"][name]["genotype"]))


def test_finished_run_is_not_overwritten(msr_run, capsys):
    before = (msr_run / "epochs.jsonl").read_text()
    code, _, err = run_cli(capsys, "search", QUICKSTART, "--out", str(msr_run), "--quiet",
                           *sets(*RUN, base=DIGITS))
    assert code == 2 and "finished search" in err and "--force" in err
    assert (msr_run / "epochs.jsonl").read_text() == before


def test_different_space_is_refused(msr_run, capsys):
    code, _, err = run_cli(capsys, "search", QUICKSTART, "--out", str(msr_run), "--quiet",
                           *sets(*RUN, "search.seed=7", base=DIGITS))
    assert code == 2 and "different space" in err
    assert "seed 2" in err and "seed 7" in err  # the differing lines, both sides


def test_force_starts_over(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["search", QUICKSTART, "--out", str(out), "--json", *sets("search.epochs=1")]
    code, stdout, _ = run_cli(capsys, *argv)
    assert code == 0
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [e["event"] for e in lines] == ["epoch", "final"]
    assert lines[0]["genotypes"]["msr"] == records(out)[0]["rules"]["msr"]["genotype"]
    first = records(out)
    (out / "weights" / "stale.txt").write_text("x")
    code, _, _ = run_cli(capsys, *argv, "--force")
    assert code == 0
    assert records(out) == first  # same seed, same records
    assert not (out / "weights" / "stale.txt").exists()


def test_nan_loss_stops_with_a_clear_message(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "search", QUICKSTART, "--out", str(out), "--quiet",
                           *sets("search.epochs=2", "search.optimizer.lr=1e30",
                                 "search.grad_clip=0"))
    assert code == 2
    assert "diverged" in err and "training loss" in err and "epoch 0, step" in err
    assert "Traceback" not in err
    assert not (out / "checkpoint.pt").exists()


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    """A NaN in epoch 1 leaves epoch 0's checkpoint and records as they were."""
    from msrdsl.search.loop import Search

    original = Search.weight_step
    calls = {"n": 0}

    def poisoned(self, x, y, stop):
        calls["n"] += 1
        if calls["n"] > self.steps_per_epoch() + 2:
            x = x * float("nan")
        return original(self, x, y, stop)

    monkeypatch.setattr(Search, "weight_step", poisoned)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "search", QUICKSTART, "--out", str(out), "--quiet",
                           *sets("search.epochs=3"))
    assert code == 2 and "epoch 1, step 3 " in err and "end of epoch 0" in err
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 1 and state["step"] == 0 and len(state["records"]) == 1
    assert len(records(out)) == 1


def test_unwritable_out_dir_is_a_user_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(capsys, "search", QUICKSTART, "--out", str(blocker / "run"),
                           *sets("search.epochs=1"))
    assert code == 2 and "cannot create the run folder" in err and "Traceback" not in err


def test_foreign_folder_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "search", QUICKSTART, "--out", str(tmp_path),
                           *sets("search.epochs=1"))
    assert code == 2 and "not a search run folder" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("order", ["second", "first"])
def test_darts_search(tmp_path, capsys, order):
    out = tmp_path / "run"
    # Second order prints only the result (--quiet); first order shows the progress display.
    quiet = ["--quiet"] if order == "second" else []
    code, stdout, err = run_cli(capsys, "search", DARTS, "--out", str(out), *quiet,
                                *sets("search.epochs=2", f"search.arch.order={order}"))
    assert code == 0, err
    if quiet:
        from msrdsl.lang import parse_genotype

        shown = parse_genotype(stdout)
        assert cells(shown) == cells(parse_genotype_file(out / "final.genotype"))
    else:
        assert "epoch 0  train" in stdout and "epoch 1  train" in stdout
        assert "normal: " in stdout and "; reduce: " in stdout  # each epoch's genotype
        assert "chosen: epoch 1 by last" in stdout and "reduction cell" in stdout
        assert str(out / "final.genotype") in stdout.replace("\n", "")
    recs = records(out)
    assert set(recs[0]["rules"]) == {"darts", "msr", "msr_max"}
    assert {"alpha", "softmax(alpha)", "stable_rank(last_conv)"} <= set(recs[0]["scores"])
    assert recs[0]["arch_lr"] == 3e-4
    # alpha moved between the two epochs, in both cell types.
    for t in ("normal", "reduce"):
        a0, a1 = (torch.tensor(r["scores"]["alpha"][t]) for r in recs)
        assert not torch.equal(a0, a1)
    final = json.loads((out / "final.json").read_text())
    assert final["rule"] == "darts" and final["epoch"] == 1  # `epoch last`
    assert cells(from_json(final["genotype"])) == cells(
        from_json(recs[1]["rules"]["darts"]["genotype"]))


@pytest.mark.slow
def test_quickstart_search_prints_its_genotype(tmp_path):
    """The README's first command, as a user runs it (minutes on a 2-core CPU)."""
    from test_search_support import run_subprocess

    done = run_subprocess("search", QUICKSTART, "--out", str(tmp_path / "run"), timeout=1800)
    assert done.returncode == 0, done.stderr
    assert "normal cell" in done.stdout and "reduction cell" in done.stdout
    genotype = parse_genotype_file(tmp_path / "run" / "final.genotype")
    assert len(genotype.normal.nodes) == 4


@pytest.mark.slow
def test_epoch_benchmark_prints_one_json_object():
    import subprocess
    import sys

    from test_search_support import ROOT, subprocess_env

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search_epoch.py"),
                           "--set", "dataset.input_size=8", "--set", "network.cells=3"],
                          env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    result = json.loads(line)
    assert {"epoch_s", "peak_rss_mb", "steps", "s_per_step"} <= set(result)
    assert result["steps"] == 18 and result["epoch_s"] > 0


@pytest.mark.parametrize("space", [DARTS, MSR_REFERENCE], ids=["darts", "msr-reference"])
def test_stop_mid_epoch_resumes_exactly(tmp_path, capsys, monkeypatch, space):
    """A stop agreed after some step of epoch 1 (what Ctrl-C asks for) and a resume give the
    uninterrupted run's records. DARTS: the weights, alpha, both optimisers, the RNG and the
    position in the cycled validation batches of the architecture steps all come back; the
    reference code's softmax(-stable rank) mixing: the mixing weights of the epoch's start."""
    from msrdsl.search.loop import Search

    def argv(out):
        return ["search", space, "--out", str(out), "--quiet",
                *sets("search.epochs=2", "search.batch=32")]

    reference = tmp_path / "reference"
    assert run_cli(capsys, *argv(reference))[0] == 0

    original = Search.weight_step
    calls = {"n": 0}

    def stop_at_step_14(self, x, y, stop):
        calls["n"] += 1
        return original(self, x, y, stop or calls["n"] == 14)

    out = tmp_path / "run"
    monkeypatch.setattr(Search, "weight_step", stop_at_step_14)
    code, _, err = run_cli(capsys, *argv(out))
    monkeypatch.undo()
    assert code == 130 and "step 3" in err and "--resume" in err
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert (state["epoch"], state["step"]) == (1, 3)
    code, _, err = run_cli(capsys, "search", str(out), "--resume", "--quiet")
    assert code == 0, err
    assert "from epoch 1, step 3" in err
    assert records(out) == records(reference)
    if space == MSR_REFERENCE:
        recorded = records(out)[1]["scores"]
        assert {"stable_rank(last_conv, at=cell_input)", "stable_rank(last_conv)"} <= set(recorded)
        assert set(records(out)[1]["rules"]) == {"msr_reference", "msr_reference_max", "msr"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_user_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, "search", QUICKSTART, "--out", str(tmp_path / "run"),
                           "--device", "cuda", *sets("search.epochs=1"))
    assert code == 2 and "CUDA is not available" in err and "--device cpu" in err
    assert not (tmp_path / "run").exists()
