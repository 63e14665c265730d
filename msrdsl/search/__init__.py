"""The search engine: `run_search(space, out_dir, ...)` runs (or resumes) the search a space
describes and leaves a run folder (layout in msrdsl/search/rundir.py).

    loop.py         data, supernet, optimisers, the epoch/step loop, checkpoints and resume
    bilevel.py      DARTS' architecture step, first and second order
    record.py       what each epoch records: genotypes and score tables of every named rule
    rundir.py       the run folder, atomic writes, which epochs' weights are kept
    progress.py     Rich progress bars, quiet and JSON output
    distributed.py  torchrun: process group, gradient averaging, agreement checks
    model.py        the loop's view of a compiled supernet
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["run_search", "SearchResult", "SearchInterrupted", "make_reporter", "default_threads"]


def default_threads() -> int:
    """CPU threads a search uses unless told: 1 on a machine of at most 2 cores, else 0 (torch's
    own choice, one per core). On 2 cores one thread ran the quick-start supernet's small
    convolutions 1.4-3x faster than two (each parallel region waits for the slower thread, and
    any other process on the machine makes one of them slow)."""
    import os

    return 1 if (os.cpu_count() or 1) <= 2 else 0


def make_reporter(*, quiet: bool = False, json: bool = False, console: Any = None):
    """The reporter for the CLI's output switches: JSON lines, quiet, or Rich bars."""
    from msrdsl.search.progress import JsonReporter, QuietReporter, RichReporter

    if json:
        return JsonReporter()
    if console is None:
        from rich.console import Console

        console = Console(highlight=False)
    return QuietReporter(console) if quiet else RichReporter(console)


def run_search(space, out_dir: str | Path | None = None, *, device: str = "auto",
               resume: bool = False, force: bool = False, quiet: bool = False, json: bool = False,
               workers: int = 0, reporter: Any = None, command: list[str] | None = None):
    """Run or resume the search `space` describes in `out_dir` (default runs/<name>-<time>).

    `quiet` shows only the final genotype, `json` prints one JSON object per epoch and a final
    one; a `reporter` given explicitly replaces both. Returns a `SearchResult` (run_dir, epoch,
    rule, genotype, records, final).
    """
    from msrdsl.search.loop import run_search as _run_search

    if reporter is None:
        reporter = make_reporter(quiet=quiet, json=json)
    return _run_search(space, out_dir, device=device, resume=resume, force=force,
                       reporter=reporter, workers=workers, command=command)


def __getattr__(name: str):
    if name in ("SearchResult", "SearchInterrupted"):
        from msrdsl.search import loop

        return getattr(loop, name)
    raise AttributeError(name)
