"""The evaluation stage: recipes, run-directory safety, checkpoints, the train/eval commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from msrdsl.errors import DivergedError, GenotypeError, RunError
from msrdsl.lang import parse_space
from msrdsl.train import checkpoint as ck
from msrdsl.train.distributed import CPUSyncBatchNorm, convert_sync_batchnorm
from msrdsl.train.recipe import Recipe

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = str(REPO / "spaces" / "quickstart.space")
# A network small enough to train an epoch of the embedded digits in seconds on two cores.
TINY = ("evaluate.epochs=1", "evaluate.cells=3", "evaluate.channels=4", "evaluate.batch=128",
        "dataset.input_size=8")
# The same on the synthetic set (410 training images: 4 steps an epoch).
SMALL = (*TINY, "dataset=synthetic")


def _needs_compiler():
    import msrdsl.nn

    if not hasattr(msrdsl.nn, "build_eval_network"):
        pytest.skip("msrdsl.nn.build_eval_network is not there yet")


def _space(evaluate: str):
    return parse_space("space s { evaluate { " + evaluate + " } }")


def _cli(argv: list[str]) -> int:
    from msrdsl.cli import cli
    from msrdsl.cli.console import run_guarded

    return run_guarded(cli, argv, debug=False)


def _sets(settings) -> list[str]:
    return [a for s in settings for a in ("--set", s)]


# ------------------------------------------------------------------------------------- recipes


def test_cosine_schedule_is_darts_cosine_annealing_stepped_per_epoch():
    recipe = Recipe.from_spec(_space("epochs 12 optimizer sgd { lr 0.025 lr_min 0.001 }").evaluate)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.025)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=12, eta_min=0.001)
    for epoch in range(12):
        assert recipe.lr_at(epoch) == pytest.approx(sched.get_last_lr()[0], rel=1e-12)
        opt.step()
        sched.step()


def test_warmup_is_linear_then_cosine_from_the_peak():
    spec = _space("epochs 20 warmup 4 optimizer sgd { lr 0.1 lr_min 0 }").evaluate
    recipe = Recipe.from_spec(spec)
    assert [recipe.lr_at(e) for e in range(4)] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert recipe.lr_at(4) == pytest.approx(0.1)
    assert recipe.lr_at(12) == pytest.approx(0.05)  # half-way through the 16 cosine epochs
    assert all(recipe.lr_at(e) > recipe.lr_at(e + 1) for e in range(4, 19))


def test_drop_path_ramp_and_label_smoothing():
    recipe = Recipe.from_spec(_space("epochs 10 drop_path 0.3 label_smoothing 0.1").evaluate)
    assert [recipe.drop_path_at(e) for e in (0, 5, 9)] == pytest.approx([0.0, 0.15, 0.27])
    criterion = recipe.criterion()
    assert criterion.label_smoothing == pytest.approx(0.1)
    logits = torch.tensor([[10.0, 0.0]])
    assert criterion(logits, torch.tensor([0])) > torch.nn.functional.cross_entropy(
        logits, torch.tensor([0]))


def test_constant_schedule_and_adam():
    recipe = Recipe.from_spec(_space("optimizer adam { lr 0.001 schedule constant }").evaluate)
    assert recipe.lr_at(0) == recipe.lr_at(599) == 0.001
    assert isinstance(recipe.make_optimizer([torch.zeros(1, requires_grad=True)]),
                      torch.optim.Adam)


def test_cpu_sync_batchnorm_is_plain_batchnorm_on_one_process():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    synced = convert_sync_batchnorm(torch.nn.Sequential(*[m for m in net]), "cpu")
    assert isinstance(synced[1], CPUSyncBatchNorm)
    assert set(synced.state_dict()) == set(net.state_dict())
    x = torch.randn(8, 3, 6, 6)
    assert torch.equal(synced(x), net(x))


# ------------------------------------------------------------------------ files and run folders


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    ck.save_atomic(tmp_path / "a.pt", {"format": ck.WEIGHTS, "x": torch.ones(2)})
    ck.write_json_atomic(tmp_path / "a.json", {"k": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.pt"]
    assert torch.equal(ck.load_pt(tmp_path / "a.pt")["x"], torch.ones(2))


@pytest.mark.parametrize("content, message", [
    (b"", "not a checkpoint, it is empty"),
    (b"hello, world", "not a checkpoint, it is not a torch file"),
    ("truncated", "truncated or corrupt"),
    ("foreign", "not an msrdsl checkpoint"),
    ("objects", "not an msrdsl checkpoint"),
])
def test_unreadable_checkpoints_are_run_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "x.pt"
    if content == "truncated":
        ck.save_atomic(path, {"format": ck.WEIGHTS, "x": torch.ones(1000)})
        path.write_bytes(path.read_bytes()[:1500])
    elif content == "foreign":
        torch.save({"state_dict": {}}, path)
    elif content == "objects":
        torch.save(Path("."), path)
    else:
        path.write_bytes(content)
    with pytest.raises(RunError) as err:
        ck.load_pt(path)
    assert str(path) in err.value.message and message in err.value.message


def test_run_dir_start_refuse_force(tmp_path):
    run = ck.RunDir(tmp_path / "run")
    assert run.prepare("g", "s", force=False, resume=False) == (None, None)  # fresh
    ck.write_json_atomic(run.file(ck.RUN_JSON), {"kind": "train", "status": "running"})
    ck.write_text_atomic(run.file(ck.GENOTYPE), "g")
    ck.write_text_atomic(run.file(ck.SPACE), "s")
    assert run.prepare("g", "s", force=False, resume=False) == (None, None)  # no checkpoint yet
    with pytest.raises(RunError, match="nothing to resume"):
        run.prepare("g", "s", force=False, resume=True)
    with pytest.raises(RunError, match="another genotype"):
        run.prepare("g2", "s", force=False, resume=False)
    with pytest.raises(RunError, match="another space"):
        run.prepare("g", "s2", force=False, resume=False)
    ck.write_json_atomic(run.file(ck.RUN_JSON), {"kind": "train", "status": "finished"})
    with pytest.raises(RunError, match="finished"):
        run.prepare("g", "s", force=False, resume=False)
    (run.path / "notes.txt").write_text("mine")
    assert run.prepare("g2", "s2", force=True, resume=False) == (None, None)
    assert [p.name for p in run.path.iterdir()] == ["notes.txt"]  # --force removes only ours
    with pytest.raises(RunError, match="not a training run"):
        run.prepare("g", "s", force=False, resume=False)


def test_a_genotype_operator_missing_from_the_space_is_a_genotype_error(tmp_path):
    from msrdsl.train import resolve_genotype, resolve_space

    path = tmp_path / "odd.genotype"
    path.write_text("genotype odd {\n"
                    "  normal {\n    node 2 = sep_conv_3x3(0) + conv_9x9(1)\n"
                    "    node 3 = sep_conv_3x3(0) + sep_conv_3x3(1)\n    concat [2, 3]\n  }\n"
                    "  reduce {\n    node 2 = sep_conv_3x3(0) + sep_conv_3x3(1)\n"
                    "    node 3 = sep_conv_3x3(0) + sep_conv_3x3(1)\n    concat [2, 3]\n  }\n}\n")
    with pytest.raises(GenotypeError, match="'conv_9x9' is not defined in space"):
        resolve_genotype(str(path), resolve_space(QUICKSTART))


def test_a_batch_that_does_not_split_over_the_processes_is_refused(tmp_path):
    from msrdsl.train import run_training
    from msrdsl.train.distributed import Dist

    with pytest.raises(RunError, match="does not split evenly over 3 processes"):
        run_training("msr_darts", QUICKSTART, overrides=TINY, out=tmp_path / "r",
                     dist=Dist(rank=0, world_size=3), device="cpu")


def test_cli_errors_before_training(tmp_path, capsys):
    assert _cli(["train", "no_such_genotype", "--space", QUICKSTART, "--out",
                 str(tmp_path / "r")]) == 2
    assert "unknown genotype" in capsys.readouterr().err
    assert _cli(["eval", str(tmp_path / "missing.pt")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    assert _cli(["eval", str(tmp_path / "junk.pt")]) == 2
    assert f"{tmp_path / 'junk.pt'}: not a checkpoint" in capsys.readouterr().err


# ------------------------------------------------------------------ training (needs msrdsl.nn)


def test_tiny_pipeline_train_then_eval(tmp_path, capsys):
    _needs_compiler()
    out = tmp_path / "run"
    code = _cli(["train", "msr_darts", "--space", QUICKSTART, *_sets(TINY), "--out", str(out),
                 "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [e["event"] for e in lines] == ["epoch", "final"]
    final = lines[-1]
    assert final["finished"] and final["epochs"] == 1 and 0 <= final["test_acc"] <= 1
    assert sorted(p.name for p in out.iterdir()) == sorted(set(ck.RUN_FILES) - {ck.INTERRUPTED})
    record = json.loads((out / ck.EPOCHS).read_text())
    assert set(record) == {"epoch", "train_loss", "train_acc", "test_loss", "test_acc",
                           "test_top5", "lr", "drop_path", "seconds"}
    info = json.loads((out / ck.RUN_JSON).read_text())
    assert info["status"] == "finished" and info["world_size"] == 1

    assert _cli(["eval", str(out), "--json"]) == 0  # the folder means its final.pt
    scored = json.loads(capsys.readouterr().out)
    assert scored["checkpoint"] == str(out / ck.FINAL)
    assert scored["test_acc"] == pytest.approx(final["test_acc"], abs=1e-9)
    assert scored["test_loss"] == pytest.approx(final["test_loss"], rel=1e-5)
    assert scored["test_images"] == 359
    assert _cli(["eval", str(out / ck.CHECKPOINT)]) == 0
    assert "top-1" in capsys.readouterr().out

    # A finished run is not trained over without --force.
    argv = ["train", "msr_darts", "--space", QUICKSTART, *_sets(TINY), "--out", str(out), "-q"]
    assert _cli(argv) == 2
    assert "holds a finished training run" in capsys.readouterr().err


def test_corrupt_checkpoint_of_an_unfinished_run_is_exit_2(tmp_path, capsys):
    _needs_compiler()
    out = tmp_path / "run"
    argv = ["train", "msr_darts", "--space", QUICKSTART, *_sets(SMALL),
            "--set", "evaluate.epochs=2", "--out", str(out), "-q"]
    assert _cli([*argv, "--stop-after", "1"]) == 0
    assert "stopped after epoch 1 of 2" in capsys.readouterr().out
    data = (out / ck.CHECKPOINT).read_bytes()
    (out / ck.CHECKPOINT).write_bytes(data[: len(data) // 2])
    assert _cli(argv) == 2
    err = capsys.readouterr().err
    assert f"{out / ck.CHECKPOINT}: the checkpoint is truncated or corrupt" in err
    assert "Traceback" not in err
    assert _cli(["eval", str(out / ck.CHECKPOINT)]) == 2


def test_nan_loss_stops_with_exit_2(tmp_path, capsys):
    _needs_compiler()
    out = tmp_path / "run"
    code = _cli(["train", "msr_darts", "--space", QUICKSTART, *_sets(TINY), "--set",
                 "evaluate.optimizer.lr=1e30", "--set", "evaluate.grad_clip=0", "--out",
                 str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "training diverged: the loss is" in err
    assert json.loads((out / ck.RUN_JSON).read_text())["status"] == "diverged"


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    _needs_compiler()
    from msrdsl.train import run_training

    monkeypatch.setattr(Recipe, "lr_at", lambda self, epoch: 0.025 if epoch == 0 else 1e30)
    out = tmp_path / "run"
    with pytest.raises(DivergedError, match=r"after epoch 1\)") as err:
        run_training("msr_darts", QUICKSTART, overrides=(*SMALL, "evaluate.epochs=3",
                                                         "evaluate.grad_clip=0"),
                     out=out, device="cpu")
    assert str(out / ck.CHECKPOINT) in err.value.message
    state = ck.load_pt(out / ck.CHECKPOINT)
    assert state["epoch"] == 1 and len(state["records"]) == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (out / ck.FINAL).exists()


def test_trainer_amp_bf16_on_cpu_runs(tmp_path):
    _needs_compiler()
    from msrdsl.train import run_training

    done = run_training("msr_darts", QUICKSTART, overrides=SMALL, out=tmp_path / "r",
                        device="cpu", amp="bf16", channels_last=True)
    assert math.isfinite(done.result["test_loss"])


@pytest.mark.slow
def test_search_then_train_the_found_genotype_then_eval(tmp_path, capsys):
    """The whole flow on the embedded digits: search (tiny), train its final.genotype, eval."""
    _needs_compiler()
    pytest.importorskip("msrdsl.search")
    found = tmp_path / "search"
    tiny_search = ("dataset.input_size=8", "network.cells=3", "network.channels=4",
                   "cell.nodes=2", "search.epochs=1", "search.batch=128")
    assert _cli(["search", QUICKSTART, "--out", str(found), *_sets(tiny_search), "-q"]) == 0
    genotype = found / "final.genotype"
    assert genotype.is_file()
    capsys.readouterr()
    trained = tmp_path / "train"
    # The search folder stands for its final.genotype and the space it searched.
    assert _cli(["train", str(found), *_sets(TINY), "--out", str(trained), "-q"]) == 0
    assert "final test accuracy" in capsys.readouterr().out
    assert _cli(["eval", str(trained), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["genotype"] == "quickstart" and 0 <= scored["test_acc"] <= 1


def test_imagenet_recipe_warms_up_and_smooths_labels(tmp_path):
    """net imagenet (two stems, 1/8 resolution), label smoothing and a linear warm-up."""
    _needs_compiler()
    from msrdsl.train import run_training

    done = run_training("msr_darts", QUICKSTART, overrides=(
        *SMALL, "dataset.input_size=32", "evaluate.net=imagenet", "evaluate.epochs=3",
        "evaluate.warmup=2", "evaluate.label_smoothing=0.1", "evaluate.cells=3",
        "evaluate.channels=4", "evaluate.optimizer.lr=0.1"), out=tmp_path / "r", device="cpu")
    assert [r["lr"] for r in done.records] == pytest.approx([0.05, 0.1, 0.1])
    assert done.trainer.criterion.label_smoothing == pytest.approx(0.1)
    info = json.loads((tmp_path / "r" / ck.RUN_JSON).read_text())
    assert info["network"]["net"] == "imagenet" and info["recipe"]["warmup"] == 2


def _tiny_cifar10(root: Path, per_batch: int = 20) -> None:
    """A CIFAR-10 folder in the python layout with random images (5 x per_batch train, per_batch
    test), enough to run the CIFAR recipe end to end."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8),
                 "labels": rng.integers(0, 10, per_batch).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))


def test_cifar_recipe_of_the_default_space_on_a_local_cifar10_folder(tmp_path, capsys,
                                                                    monkeypatch):
    """`msrdsl train genotypes/msr_darts.genotype --data DIR`: spaces/msr.space's CIFAR recipe
    (cutout 16, drop-path, auxiliary tower 0.4, clip 5) on 32x32 images from a local folder."""
    _needs_compiler()
    _tiny_cifar10(tmp_path / "cifar")
    out = tmp_path / "run"
    genotype = str(REPO / "genotypes" / "msr_darts.genotype")
    assert _cli(["train", genotype, "--data", str(tmp_path / "cifar"), "--out", str(out),
                 *_sets(("evaluate.epochs=2", "evaluate.cells=3", "evaluate.channels=4",
                         "evaluate.batch=50")), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["drop_path"] for r in lines[:2]] == pytest.approx([0.0, 0.15])
    info = json.loads((out / ck.RUN_JSON).read_text())
    assert info["space"] == "msr_darts" and info["dataset"] == {
        "name": "cifar10", "root": str(tmp_path / "cifar"), "input_size": 32}
    assert info["recipe"]["cutout"] == 16 and info["recipe"]["auxiliary"] == 0.4
    assert _cli(["eval", str(out / ck.BEST), "--json"]) == 0  # the folder training read
    assert json.loads(capsys.readouterr().out)["test_images"] == 20
    from msrdsl.data import cifar

    monkeypatch.setattr(cifar, "_download", lambda root: "offline (test)")  # never fetch 170 MB
    assert _cli(["eval", str(out), "--data", str(tmp_path / "nowhere")]) == 2
    assert "no CIFAR-10 data" in capsys.readouterr().err
