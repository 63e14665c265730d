"""`msrdsl search SPACE`: run the architecture search a space describes, or resume one."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click

from msrdsl.cli.console import INTERRUPTED, console, err_console
from msrdsl.errors import RunError


@click.command("search")
@click.argument("space", type=click.Path(exists=False))
@click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Run folder (default: runs/<space name>-<YYYYmmdd-HHMMSS>).")
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
              help="Override a setting of the space, e.g. search.epochs=5 (repeatable).")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda",
              help="Where to train: auto picks cuda when available.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last checkpoint (the same command "
                   "without --resume also resumes an unfinished run).")
@click.option("--force", is_flag=True, help="Start over in --out, deleting its previous run.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the chosen genotype.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per epoch, then the final one (no progress bars).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Data-loading worker processes (0: load in the main process, which keeps "
                   "a mid-epoch resume exact when augmenting).")
@click.option("--threads", type=click.IntRange(min=0), default=None,
              help="CPU threads for torch. Default: 1 on a machine of at most 2 cores (measured "
                   "1.4-3x faster there than 2 threads for the quick-start supernet), else one "
                   "per core; 0 keeps torch's own choice.")
def command(space: str, out_dir: str | None, overrides: tuple[str, ...], device: str,
            resume: bool, force: bool, quiet: bool, as_json: bool, workers: int,
            threads: int | None) -> None:
    """Run the architecture search SPACE describes and write its run folder.

    SPACE is a .space file, or a run folder (its space.space, resumed in place). Under
    `torchrun --nproc_per_node N -m msrdsl search ...` the search runs on N processes.
    Ctrl-C saves a checkpoint and prints the command that resumes it.
    """
    # Idle OpenMP threads sleep instead of spinning: spinning threads starve each other (and
    # the data loading) when the cores are shared. Must be set before torch is first imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from msrdsl.lang import load_space
    from msrdsl.search import default_threads, make_reporter
    from msrdsl.search.loop import SearchInterrupted, run_search
    from msrdsl.search.rundir import SPACE_FILE

    if quiet and as_json:
        raise click.UsageError("--quiet and --json cannot be combined")
    space_path = Path(space)
    if space_path.is_dir():
        if not (space_path / SPACE_FILE).exists():
            raise RunError(f"'{space}' is a folder but not a search run folder (no {SPACE_FILE})")
        if out_dir is not None and Path(out_dir).resolve() != space_path.resolve():
            raise RunError(f"SPACE is the run folder '{space}', so --out cannot name another one")
        out_dir = space
        space_path = space_path / SPACE_FILE
    spec = load_space(space_path, overrides)
    reporter = make_reporter(quiet=quiet, json=as_json, console=console)
    previous_threads = torch.get_num_threads()
    chosen = threads if threads is not None else default_threads()
    if chosen:
        torch.set_num_threads(chosen)
    try:
        run_search(spec, out_dir, device=device, resume=resume, force=force, reporter=reporter,
                   workers=workers, command=list(sys.argv))
    except SearchInterrupted as stop:
        # A mid-epoch resume is bit-exact with the same thread count, so the command keeps it.
        world = int(os.environ.get("WORLD_SIZE", "1"))
        launcher = (["torchrun", f"--nproc_per_node={world}", "-m", "msrdsl"] if world > 1
                    else ["msrdsl"])
        again = [*launcher, "search", str(stop.run_dir), "--resume"]
        if device != "auto":
            again += ["--device", device]
        if workers:
            again += ["--workers", str(workers)]
        if threads is not None:
            again += ["--threads", str(threads)]
        where = f"epoch {stop.epoch}" + (f", step {stop.step}" if stop.step else "")
        err_console.print(f"interrupted: checkpoint saved at {where} in '{stop.run_dir}'.\n"
                          f"resume with:\n  {shlex.join(again)}", markup=False, highlight=False,
                          soft_wrap=True)
        raise click.exceptions.Exit(INTERRUPTED) from None
    finally:
        torch.set_num_threads(previous_threads)  # the process may go on (tests, notebooks)
