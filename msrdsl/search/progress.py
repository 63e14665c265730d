"""What a search shows while it runs: Rich progress bars, one line per epoch, or JSON lines.

Three reporters share one interface: `RichReporter` (bars for the epochs and the steps of the
current epoch with loss, accuracy and ETA, then one line of figures and the current genotype per
epoch, then the chosen genotype drawn), `QuietReporter` (only the final genotype) and
`JsonReporter` (one JSON object per epoch on stdout, then the final one; no bars). Ranks other
than 0 get `NullReporter`.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from msrdsl.genotype import Genotype


def short_op(op: str) -> str:
    """sep_conv_3x3 -> sep3, dil_conv_5x5 -> dil5, max_pool_3x3 -> max3, skip_connect -> skip."""
    match = re.fullmatch(r"([a-z]+)_[a-z]+_(\d+)x\d+", op)
    if match:
        return f"{match.group(1)}{match.group(2)}"
    return {"skip_connect": "skip"}.get(op, op)


def compact_genotype(g: Genotype) -> str:
    """One line: `normal: sep3(1) sep3(0) | ... ; reduce: ...`, nodes separated by `|`."""
    parts = []
    for name, cell in g.cells.items():
        nodes = " | ".join(" ".join(f"{short_op(e.op)}({e.input})" for e in node.edges)
                           for node in cell.nodes)
        parts.append(f"{name}: {nodes}")
    return "; ".join(parts)


def epoch_summary(record: dict[str, Any], epochs: int) -> str:
    # Epochs are numbered from 0 everywhere: records, weights files, final.json.
    width = len(str(max(epochs - 1, 0)))
    text = (f"epoch {record['epoch']:>{width}}  "
            f"train {record['train_loss']:.4f} {100 * record['train_acc']:5.1f}%  "
            f"valid {record['valid_loss']:.4f} {100 * record['valid_acc']:5.1f}%  "
            f"lr {record['lr']:.4g}  {record['seconds']:.1f}s")
    return text


def json_event(record: dict[str, Any]) -> dict[str, Any]:
    """An epoch record for stdout: the figures and each rule's genotype, not the score tables."""
    out = {"event": "epoch"}
    out.update({k: v for k, v in record.items() if k not in ("rules", "scores")})
    out["genotypes"] = {rule: r["genotype"] for rule, r in record["rules"].items()}
    return out


class Reporter:
    """Every hook is optional; the base class shows nothing."""

    def start(self, *, epochs: int, first_epoch: int, run_dir: str, resumed: str | None) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def epoch_start(self, epoch: int, steps: int, done: int) -> None:
        pass

    def step(self, loss: float, acc: float) -> None:
        pass

    def epoch_end(self, record: dict[str, Any], genotype: Genotype) -> None:
        pass

    def final(self, final: dict[str, Any], genotype: Genotype, files: dict[str, str]) -> None:
        pass

    def close(self) -> None:
        pass


class NullReporter(Reporter):
    pass


class RichReporter(Reporter):
    def __init__(self, console: Console):
        self.console = console
        self.progress: Progress | None = None
        self.epochs_task: TaskID | None = None
        self.steps_task: TaskID | None = None
        self.epochs = 0
        self._loss = self._acc = 0.0
        self._n = 0

    def start(self, *, epochs, first_epoch, run_dir, resumed):
        self.epochs = epochs
        if resumed:
            self.console.print(resumed)
        self.console.print(f"search run: [bold]{run_dir}[/]")
        self.progress = Progress(
            TextColumn("{task.description:>9}"), BarColumn(bar_width=30), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"),
            TimeRemainingColumn(), console=self.console, transient=False)
        self.progress.start()
        self.epochs_task = self.progress.add_task("epochs", total=epochs, completed=first_epoch,
                                                  stats="")

    def message(self, text):
        self.console.print(text)

    def epoch_start(self, epoch, steps, done):
        assert self.progress is not None
        self._loss = self._acc = 0.0
        self._n = 0
        if self.steps_task is not None:
            self.progress.remove_task(self.steps_task)
        self.steps_task = self.progress.add_task(f"epoch {epoch}", total=steps,
                                                 completed=done, stats="")

    def step(self, loss, acc):
        assert self.progress is not None and self.steps_task is not None
        # A running mean over the steps seen since (re)starting the epoch.
        self._n += 1
        self._loss += (loss - self._loss) / self._n
        self._acc += (acc - self._acc) / self._n
        self.progress.update(self.steps_task, advance=1,
                             stats=f"loss {self._loss:.3f} acc {100 * self._acc:5.1f}%")

    def epoch_end(self, record, genotype):
        assert self.progress is not None
        self.progress.update(self.epochs_task, advance=1,
                             stats=f"valid {record['valid_loss']:.3f} "
                                   f"{100 * record['valid_acc']:5.1f}%")
        self.progress.console.print(epoch_summary(record, self.epochs), highlight=False)
        self.progress.console.print(f"  [dim]{compact_genotype(genotype)}[/]", highlight=False)

    def final(self, final, genotype, files):
        self.close()
        from msrdsl.render import render_genotype

        self.console.print(f"chosen: epoch {final['epoch']} by [bold]{final['epoch_rule']}[/] "
                           f"(valid loss {final['valid_loss']:.4f}), rule [bold]{final['rule']}[/]")
        self.console.print(render_genotype(genotype))
        self.console.print(f"run folder [bold]{files['run_dir']}[/]: {files['final.genotype']}, "
                           f"{files['epochs.jsonl']}")

    def close(self):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _note(text: str | None) -> None:
    """A line for people on stderr, leaving stdout to the result (quiet) or to JSON."""
    if text:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


class QuietReporter(Reporter):
    """Only the result: the chosen genotype in the .genotype language."""

    def __init__(self, console: Console):
        self.console = console

    def start(self, *, epochs, first_epoch, run_dir, resumed):
        _note(resumed)

    def final(self, final, genotype, files):
        from msrdsl.lang import format_genotype

        self.console.print(format_genotype(genotype), end="", markup=False, highlight=False,
                           soft_wrap=True)


class JsonReporter(Reporter):
    """One compact JSON object per line: each epoch, then the final result."""

    def __init__(self, stream=None):
        self.stream = stream

    def _emit(self, obj: dict[str, Any]) -> None:
        stream = self.stream or sys.stdout
        stream.write(json.dumps(obj) + "\n")
        stream.flush()

    def start(self, *, epochs, first_epoch, run_dir, resumed):
        _note(resumed)

    def epoch_end(self, record, genotype):
        self._emit(json_event(record))

    def final(self, final, genotype, files):
        self._emit({"event": "final", **final, "files": files})
