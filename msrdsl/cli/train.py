"""`msrdsl train GENOTYPE`: train a genotype's evaluation network (one process or torchrun)."""

from __future__ import annotations

import os
import sys

import click

from msrdsl.cli.console import INTERRUPTED, USER_ERROR, console, err_console
from msrdsl.errors import MsrdslError


@click.command("train")
@click.argument("genotype")
@click.option("--space", "space", type=click.Path(dir_okay=False), default=None,
              help="The .space whose evaluate block is the recipe (default: spaces/msr.space).")
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
              help="Override a setting of the space, e.g. evaluate.epochs=1.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run folder (default: runs/train-GENOTYPE-SPACE).")
@click.option("--data", "data_root", type=click.Path(), default=None,
              help="Folder of the data set (replaces the space's dataset root).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="auto: CUDA when available.")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), default="auto",
              show_default=True, help="Mixed precision; auto: bf16 (or fp16) on CUDA, off on CPU.")
@click.option("--channels-last", is_flag=True, help="channels_last memory layout (fast on GPUs).")
@click.option("--sync-bn", is_flag=True, help="Batch norm over the global batch of all processes.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Data loading processes per training process (default: 0 on CPU, 4 on CUDA).")
@click.option("--stop-after", type=click.IntRange(min=1), default=None, metavar="N",
              help="Train at most N more epochs, then stop; the same command continues.")
@click.option("--resume", is_flag=True, help="Continue the run in --out; fail if there is none.")
@click.option("--force", is_flag=True, help="Start over, replacing the run in --out.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the final test accuracy.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per epoch on stdout, then the final result.")
def command(genotype: str, space: str | None, overrides: tuple[str, ...], out: str | None,
            data_root: str | None, device: str, amp: str, channels_last: bool, sync_bn: bool,
            workers: int | None, stop_after: int | None, resume: bool, force: bool, quiet: bool,
            as_json: bool) -> None:
    """Train GENOTYPE (a .genotype file, a name in genotypes/, or a search run folder: its
    final.genotype with the space it searched) with the space's evaluation recipe.

    The same command again resumes an interrupted run. For several processes:
    `torchrun --nproc_per_node N -m msrdsl train ...` (evaluate.batch is the global batch).
    """
    from msrdsl.train import TrainingInterrupted, train_genotype
    from msrdsl.train.progress import JsonReporter, NullReporter, QuietReporter, RichReporter

    if quiet and as_json:
        raise click.UsageError("--quiet and --json cannot be combined")
    main_rank = os.environ.get("RANK", "0") in ("", "0")
    if not main_rank:
        reporter = NullReporter()
    elif as_json:
        reporter = JsonReporter()
    elif quiet:
        reporter = QuietReporter(console)
    else:
        reporter = RichReporter(console)
    try:
        train_genotype(genotype, space, overrides=overrides, out=out, data_root=data_root,
                       device=device, amp=amp, channels_last=channels_last, sync_bn=sync_bn,
                       workers=workers, stop_after=stop_after, resume=resume, force=force,
                       reporter=reporter, command=_command_line())
    except TrainingInterrupted as stop:
        if main_rank:
            err_console.print(f"interrupted: {stop.message}", highlight=False, soft_wrap=True)
        raise click.exceptions.Exit(INTERRUPTED) from None
    except MsrdslError:
        if main_rank:
            raise
        # Every rank meets the same error; only rank 0 prints it.
        raise click.exceptions.Exit(USER_ERROR) from None


def _command_line() -> list[str]:
    """`msrdsl train ...` as typed (for run.json), whether run as msrdsl, -m msrdsl or torchrun."""
    argv = sys.argv
    if "train" in argv:
        return ["msrdsl", *argv[argv.index("train"):]]
    return list(argv)
