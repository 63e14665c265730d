"""The run directory of a search: what is in it, and writing it so that no crash can corrupt it.

Layout (`--out DIR`, default `runs/<space name>-<YYYYmmdd-HHMMSS>`)::

    DIR/
      space.space            the flattened space as run (`format_space`); a resume must match it
      run.json               seed, msrdsl/torch/python versions, device, command line, world size,
                             start time (and the times of later resumes)
      epochs.jsonl           one JSON object per finished epoch, in order (see below)
      checkpoint.pt          the latest state: the end of the last finished epoch, or the step where
                             Ctrl-C stopped the run
      weights/epoch-NNN.pt   the supernet's state_dict after epoch NNN (0-based, 3 digits), kept for
                             every epoch the space's epoch rule may still choose, and the last one
      final.genotype         the chosen genotype (`.genotype` language), a header comment naming
                             the run, the rule and the epoch; written when the search ends
      final.json             {"epoch", "epoch_rule", "patience", "rule", "valid_loss", "genotype",
                             "run_dir", "world_size"}; written last: its presence means "finished"

Each line of `epochs.jsonl`::

    {"epoch": 0, "train_loss": .., "train_acc": .., "valid_loss": .., "valid_acc": ..,
     "lr": .., "arch_lr": .. (alpha mixing only), "seconds": ..,
     "rules": {RULE: {"genotype": <msrdsl.genotype_io.to_json>,
                      "op_scores": {"normal": [[..] per edge], "reduce": ..},
                      "edge_scores": {"normal": [..], "reduce": ..}}, ...},
     "scores": {"stable_rank(last_conv)": {"normal": [[[..] per op] per edge] per cell], ..},
                "alpha": {"normal": [[..]], ..}, "softmax(alpha)": .., ...}}

`rules` holds every rule the space names (`select` and `record`); `scores` holds the base
criteria those rules (and a score-based mix) read, per cell of each type, edge (DARTS order) and
operator (the space's order), so any recorded criterion can be re-derived from the record alone.
Accuracies are fractions in [0, 1]; losses are means over the epoch's samples.

Every file is written atomically (a temporary file in the same folder, flushed and fsynced, then
`os.replace`, then the folder fsynced), so a kill at any moment leaves the old or the new file
whole. `epochs.jsonl` is rewritten from the list of records held inside `checkpoint.pt`, so a kill
between the two writes is repaired on resume.
"""

from __future__ import annotations

import difflib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from msrdsl.atomic import fsync_dir, write_bytes
from msrdsl.errors import RunError

SPACE_FILE = "space.space"
RUN_FILE = "run.json"
EPOCHS_FILE = "epochs.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
WEIGHTS_DIR = "weights"
FINAL_GENOTYPE = "final.genotype"
FINAL_JSON = "final.json"

# What `--force` removes: the run's own files, never anything else a user put in the folder.
RUN_FILES = (SPACE_FILE, RUN_FILE, EPOCHS_FILE, CHECKPOINT_FILE, FINAL_GENOTYPE, FINAL_JSON)


def weights_name(epoch: int) -> str:
    return f"epoch-{epoch:03d}.pt"


def atomic_write(path: str | Path, write: Callable[[Any], None], *, binary: bool = True) -> None:
    """Replace `path` by what `write(handle)` writes, atomically (msrdsl.atomic)."""
    buffer = io.BytesIO() if binary else io.StringIO()
    try:
        write(buffer)
    except OSError as err:
        raise RunError(f"cannot write '{path}': {err.strerror or err}",
                       hint="free some disk space or choose another folder with --out") from None
    data = buffer.getvalue()
    write_bytes(path, data if binary else data.encode("utf-8"))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), binary=False)


def json_line(obj: Any) -> str:
    # repr-exact floats (json's default) make the file bit-for-bit reproducible.
    return json.dumps(obj, separators=(", ", ": "), allow_nan=True)


class RunDir:
    """One search's folder: its files by name, and their safe reading and writing."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- names ---------------------------------------------------------------------------------

    @property
    def space_file(self) -> Path:
        return self.path / SPACE_FILE

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def epochs_file(self) -> Path:
        return self.path / EPOCHS_FILE

    @property
    def checkpoint_file(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def weights_dir(self) -> Path:
        return self.path / WEIGHTS_DIR

    @property
    def final_genotype(self) -> Path:
        return self.path / FINAL_GENOTYPE

    @property
    def final_json(self) -> Path:
        return self.path / FINAL_JSON

    def weights_file(self, epoch: int) -> Path:
        return self.weights_dir / weights_name(epoch)

    # -- state ---------------------------------------------------------------------------------

    def exists(self) -> bool:
        return self.path.exists()

    def is_run(self) -> bool:
        """Whether the folder holds (the beginning of) a search run."""
        return self.space_file.exists() or self.checkpoint_file.exists()

    def is_finished(self) -> bool:
        return self.final_json.exists()

    def has_checkpoint(self) -> bool:
        return self.checkpoint_file.exists()

    def stored_space(self) -> str | None:
        try:
            return self.space_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as err:
            raise RunError(f"cannot read '{self.space_file}': {err.strerror}") from None

    def kept_epochs(self) -> list[int]:
        """Epochs whose weights are on disk."""
        if not self.weights_dir.is_dir():
            return []
        out = []
        for p in self.weights_dir.glob("epoch-*.pt"):
            try:
                out.append(int(p.stem.split("-", 1)[1]))
            except ValueError:
                continue
        return sorted(out)

    # -- writing -------------------------------------------------------------------------------

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.weights_dir.mkdir(exist_ok=True)
        except OSError as err:
            raise RunError(f"cannot create the run folder '{self.path}': "
                           f"{err.strerror or err}",
                           hint="choose a writable folder with --out") from None
        if not os.access(self.path, os.W_OK):
            raise RunError(f"cannot write in the run folder '{self.path}': permission denied",
                           hint="choose a writable folder with --out")

    def clear(self) -> None:
        """Remove the run's own files (what `--force` starts over from)."""
        try:
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
            self.remove_temporaries()
            if self.weights_dir.is_dir():
                shutil.rmtree(self.weights_dir)
        except OSError as err:
            raise RunError(f"cannot clear the run folder '{self.path}': "
                           f"{err.strerror or err}") from None

    def remove_temporaries(self) -> None:
        """Delete the temporary files of writes a kill interrupted (never renamed into place)."""
        for folder in (self.path, self.weights_dir):
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)

    def write_space(self, text: str) -> None:
        atomic_write_text(self.space_file, text)

    def write_run_info(self, info: dict[str, Any]) -> None:
        atomic_write_text(self.run_file, json.dumps(info, indent=2) + "\n")

    def read_run_info(self) -> dict[str, Any]:
        try:
            return json.loads(self.run_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def write_epochs(self, records: Iterable[dict[str, Any]]) -> None:
        atomic_write_text(self.epochs_file, "".join(json_line(r) + "\n" for r in records))

    def read_epochs(self) -> list[dict[str, Any]]:
        try:
            text = self.epochs_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def save_torch(self, path: Path, obj: Any) -> None:
        import torch

        # Serialise first: a failure inside torch.save must not leave a half-written temp file
        # holding the disk, and the write itself is then one plain buffer.
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        atomic_write(path, lambda f: f.write(buffer.getbuffer()))

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        self.save_torch(self.checkpoint_file, state)

    def load_checkpoint(self, map_location: Any = "cpu") -> dict[str, Any]:
        import torch

        try:
            return torch.load(self.checkpoint_file, map_location=map_location, weights_only=False)
        except FileNotFoundError:
            raise RunError(f"'{self.path}' has no checkpoint to resume from") from None
        except Exception as err:  # a truncated or foreign file: say which, not a pickle trace
            raise RunError(f"cannot read the checkpoint '{self.checkpoint_file}': {err}",
                           hint="start the run over with --force") from None

    def save_weights(self, epoch: int, state_dict: dict[str, Any]) -> None:
        self.save_torch(self.weights_file(epoch), state_dict)

    def prune_weights(self, keep: Iterable[int]) -> None:
        """Delete the weights of every epoch not in `keep`."""
        keep = set(keep)
        for epoch in self.kept_epochs():
            if epoch not in keep:
                try:
                    self.weights_file(epoch).unlink(missing_ok=True)
                except OSError as err:
                    raise RunError(f"cannot delete {self.weights_file(epoch)}: {err.strerror or err}") from None

    def write_final(self, genotype_text: str, final: dict[str, Any]) -> None:
        atomic_write_text(self.final_genotype, genotype_text)
        atomic_write_text(self.final_json, json.dumps(final, indent=2) + "\n")


def space_difference(stored: str, current: str, stored_name: str, current_name: str) -> str:
    """The lines where two flattened spaces differ, as a short unified diff."""
    diff = difflib.unified_diff(stored.splitlines(), current.splitlines(), stored_name,
                                current_name, n=0, lineterm="")
    lines = [line for line in diff if not line.startswith("@@")]
    if len(lines) > 24:
        lines = lines[:24] + [f"... ({len(lines) - 24} more lines)"]
    return "\n".join(lines)


def weights_to_keep(valid_losses: list[float], rule: str, patience: int) -> set[int]:
    """The epochs whose weights a run must keep: every epoch the epoch rule may still choose.

    `last` can only choose the last epoch. `min_valid_loss` keeps its current choice: a later
    epoch replaces it only by a strictly lower loss, and is then the last. `before_valid_loss_rises`
    keeps its choice once a rise is confirmed (the choice is then final); until then any epoch from
    the latest running minimum on may still become the epoch before the rise. The last epoch is
    always kept (it is the result when no rise is confirmed, and what a resumed run continues from).
    """
    from msrdsl.derive import epoch_choice

    n = len(valid_losses)
    if n == 0:
        return set()
    last = n - 1
    choice = epoch_choice(valid_losses, rule, patience)
    if rule == "last":
        return {last}
    if rule == "min_valid_loss" or choice < last:
        return {choice, last}
    # No rise confirmed yet: the latest epoch holding the running minimum, and everything after.
    running_min, latest_min = valid_losses[0], 0
    for t in range(1, n):
        if valid_losses[t] <= running_min:
            running_min, latest_min = valid_losses[t], t
    return set(range(latest_min, n)) | {choice}
