"""What training shows while it runs: Rich bars, nothing, or JSON lines.

The same interface as the search's reporters: `RichReporter` (a bar for the epochs and one for
the steps of the current epoch with running loss, accuracy and ETA, one line of figures per
epoch, the final test accuracy), `QuietReporter` (only the final line), `JsonReporter` (one JSON
object per epoch on stdout, then the final one). Ranks other than 0 report nothing.
"""

from __future__ import annotations

import json
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


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    return (f"epoch {record['epoch'] + 1}/{epochs}  "
            f"train {record['train_loss']:.4f} {100 * record['train_acc']:5.1f}%  "
            f"test {record['test_loss']:.4f} {100 * record['test_acc']:5.2f}% "
            f"(top-5 {100 * record['test_top5']:5.2f}%)  "
            f"lr {record['lr']:.4g}  drop-path {record['drop_path']:.3f}  "
            f"{record['seconds']:.1f}s")


def final_line(result: dict[str, Any]) -> str:
    if not result.get("finished", True):
        return (f"stopped after epoch {result['epochs']} of {result['of_epochs']} "
                f"(test accuracy {100 * result['test_acc']:.2f}%); the same command resumes")
    best = result.get("best") or {}
    text = (f"final test accuracy {100 * result['test_acc']:.2f}% "
            f"(top-5 {100 * result['test_top5']:.2f}%, loss {result['test_loss']:.4f}) "
            f"after {result['epochs']} epochs")
    if best and best.get("epoch") is not None and best["epoch"] != result["epochs"] - 1:
        text += f"; best {100 * best['test_acc']:.2f}% at epoch {best['epoch'] + 1}"
    return text


class Reporter:
    """Every hook is optional; the base class shows nothing."""

    def start(self, *, run_dir: str, epochs: int, first_epoch: int, header: list[str]) -> None:
        pass

    def epoch_start(self, epoch: int, steps: int, done: int = 0) -> None:
        pass

    def step(self, loss: float, acc: float) -> None:
        pass

    def epoch_end(self, record: dict[str, Any]) -> None:
        pass

    def final(self, result: dict[str, Any]) -> None:
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

    def start(self, *, run_dir, epochs, first_epoch, header):
        self.epochs = epochs
        for line in header:
            self.console.print(line, highlight=False)
        self.console.print(f"training run: [bold]{run_dir}[/]")
        self.progress = Progress(
            TextColumn("{task.description:>11}"), BarColumn(bar_width=30), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"),
            TimeRemainingColumn(), console=self.console, transient=False)
        self.progress.start()
        self.epochs_task = self.progress.add_task("epochs", total=epochs, completed=first_epoch,
                                                  stats="")

    def epoch_start(self, epoch, steps, done=0):
        assert self.progress is not None
        self._loss = self._acc = 0.0
        self._n = 0
        if self.steps_task is not None:
            self.progress.remove_task(self.steps_task)
        self.steps_task = self.progress.add_task(f"epoch {epoch + 1}", total=steps,
                                                 completed=done, stats="")

    def step(self, loss, acc):
        assert self.progress is not None and self.steps_task is not None
        self._n += 1
        self._loss += (loss - self._loss) / self._n
        self._acc += (acc - self._acc) / self._n
        self.progress.update(self.steps_task, advance=1,
                             stats=f"loss {self._loss:.3f} acc {100 * self._acc:5.1f}%")

    def epoch_end(self, record):
        assert self.progress is not None
        self.progress.update(self.epochs_task, advance=1,
                             stats=f"test {100 * record['test_acc']:5.2f}%")
        self.progress.console.print(epoch_line(record, self.epochs), highlight=False)

    def final(self, result):
        self.close()
        self.console.print(final_line(result), highlight=False)
        files = "final.pt, best.pt" if result.get("finished", True) else "checkpoint.pt, best.pt"
        self.console.print(f"run folder [bold]{result['run_dir']}[/]: {files}, epochs.jsonl",
                           highlight=False)

    def close(self):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class QuietReporter(Reporter):
    """Only the final test accuracy."""

    def __init__(self, console: Console):
        self.console = console

    def final(self, result):
        self.console.print(final_line(result), highlight=False)


class JsonReporter(Reporter):
    """One compact JSON object per line: each epoch, then the final result."""

    def __init__(self, stream=None):
        self.stream = stream

    def _emit(self, obj: dict[str, Any]) -> None:
        stream = self.stream or sys.stdout
        stream.write(json.dumps(obj) + "\n")
        stream.flush()

    def epoch_end(self, record):
        self._emit({"event": "epoch", **record})

    def final(self, result):
        self._emit({"event": "final", **result})
