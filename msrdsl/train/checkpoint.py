"""The training run directory: atomic files, checkpoints that load or fail with a clear error.

Layout of a run directory (all writes are atomic: temp file, fsync, rename, fsync the folder)::

    run.json          what was run (genotype, space, recipe, data, world size), status, results
    genotype.genotype the genotype trained, in the .genotype language
    space.space       the space, flattened (every setting explicit, `--set`s applied)
    epochs.jsonl      one JSON object per finished epoch
    checkpoint.pt     everything needed to continue after the last finished epoch: model,
                      optimiser, scaler, epoch, records, RNG states
    interrupted.pt    the same inside an epoch, written when Ctrl-C or SIGTERM stops training
                      (with the step, the epoch's running sums and every rank's RNG state);
                      removed when the epoch finishes
    best.pt           weights of the epoch with the best test top-1, with genotype, space, metadata
    final.pt          weights after the last epoch, with genotype, space, metadata

`best.pt` is chosen on the test set, so its accuracy is optimistic; the paper's figure is the
final epoch's (`final.pt`).
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import torch

from msrdsl.atomic import write_bytes as write_bytes_atomic
from msrdsl.errors import RunError

RUN_JSON = "run.json"
EPOCHS = "epochs.jsonl"
CHECKPOINT = "checkpoint.pt"
INTERRUPTED = "interrupted.pt"
BEST = "best.pt"
FINAL = "final.pt"
GENOTYPE = "genotype.genotype"
SPACE = "space.space"
RUN_FILES = (RUN_JSON, EPOCHS, CHECKPOINT, INTERRUPTED, BEST, FINAL, GENOTYPE, SPACE)

# `format` tags: what kind of .pt file this is, so `eval` can say what it was given.
TRAIN_STATE = "msrdsl-train-state"
WEIGHTS = "msrdsl-weights"
FORMAT_VERSION = 1
# torch.save writes a zip archive; anything else is not one of ours.
_ZIP_MAGIC = b"PK\x03\x04"


# ---------------------------------------------------------------------------------------------
# Atomic writes


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def write_jsonl_atomic(path: str | Path, records: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def save_atomic(path: str | Path, obj: Any) -> None:
    """torch.save, atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# Reading


def load_pt(path: str | Path, *, expect: tuple[str, ...] = (TRAIN_STATE, WEIGHTS)) -> dict:
    """A checkpoint written by msrdsl, on the CPU; a RunError naming the file for anything else.

    Loaded with `weights_only=True`: a .pt file is data here, never code to unpickle.
    """
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: no such checkpoint")
    if path.is_dir():
        raise RunError(f"{path}: is a folder, not a checkpoint file")
    hint = ("rerun the training command with --force to start the run over"
            if path.name in (CHECKPOINT, INTERRUPTED) else None)
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as err:
        raise RunError(f"{path}: cannot read it ({err.strerror or err})") from None
    if magic != _ZIP_MAGIC:
        what = "it is empty" if not magic else "it is not a torch file"
        raise RunError(f"{path}: not a checkpoint, {what}", hint=hint)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise RunError(f"{path}: not an msrdsl checkpoint (it holds Python objects, not only "
                           "tensors and plain data, and is not loaded for safety)") from None
        raise RunError(f"{path}: the checkpoint is corrupt ({_first_line(err)})",
                       hint=hint) from None
    except Exception as err:  # zip, pickle and EOF errors all mean the same to a user
        raise RunError(f"{path}: the checkpoint is truncated or corrupt ({_first_line(err)})",
                       hint=hint) from None
    if not isinstance(obj, dict) or "format" not in obj:
        raise RunError(f"{path}: not an msrdsl checkpoint (a torch file without msrdsl's header)")
    if obj["format"] not in expect:
        raise RunError(f"{path}: a '{obj['format']}' file, expected "
                       + " or ".join(f"'{e}'" for e in expect))
    if obj.get("version", 0) > FORMAT_VERSION:
        raise RunError(f"{path}: written by a newer msrdsl (format version {obj['version']})")
    return obj


def _first_line(err: BaseException, limit: int = 100) -> str:
    text = str(err).strip()
    text = text.splitlines()[0] if text else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunError(f"{path}: cannot read the run description ({err})",
                       hint="rerun with --force to start the run over") from None
    if not isinstance(obj, dict):
        raise RunError(f"{path}: not a run description")
    return obj


def resolve_checkpoint(path: str | Path) -> Path:
    """A .pt file, or a run directory's final.pt (else best.pt, else checkpoint.pt)."""
    path = Path(path)
    if path.is_dir():
        for name in (FINAL, BEST, CHECKPOINT):
            if (path / name).is_file():
                return path / name
        raise RunError(f"{path}: a folder without {FINAL}, {BEST} or {CHECKPOINT}",
                       hint="pass a training run directory or one of its .pt files")
    return path


# ---------------------------------------------------------------------------------------------
# The run directory


class RunDir:
    """One training run's folder: decides start / resume / refuse, writes its files."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def prepare(self, genotype_text: str, space_text: str, *, force: bool, resume: bool,
                world_size: int = 1) -> tuple[dict | None, str | None]:
        """Make the folder ready; return (the state to continue from or None, a note or None).

        - absent or empty folder: start;
        - a finished run: refuse unless --force;
        - an unfinished run of the same genotype and space: continue it (the same command
          again resumes) from interrupted.pt when it belongs to the last epoch and was saved by
          as many processes as run now, else from checkpoint.pt; of another genotype or space:
          refuse unless --force;
        - a folder holding other things: refuse unless --force.
        --force removes this run's files (nothing else) and starts over; --resume insists on
        continuing and refuses when there is nothing to continue.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path}: exists and is not a folder")
        if force:
            if resume:
                raise RunError("--force and --resume contradict each other",
                               hint="--force starts over, --resume continues")
            self.clear()
            self._mkdir()
            return None, None
        if not self.path.exists() or not any(self.path.iterdir()):
            if resume:
                raise RunError(f"{self.path}: nothing to resume, the folder is empty or absent")
            self._mkdir()
            return None, None
        if not self.file(RUN_JSON).is_file():
            raise RunError(f"{self.path}: exists and is not a training run directory",
                           hint="choose another --out, or --force to write into it anyway")
        info = read_json(self.file(RUN_JSON))
        if info.get("kind") != "train":
            raise RunError(f"{self.path}: holds a '{info.get('kind')}' run, not a training run",
                           hint="choose another --out")
        if info.get("status") == "finished":
            raise RunError(f"{self.path}: holds a finished training run",
                           hint="choose another --out, or --force to train again over it")
        self._check_same(genotype_text, space_text)
        self._remove_strays()
        state = self._load_state(CHECKPOINT, genotype_text, space_text)
        inside = self._load_state(INTERRUPTED, genotype_text, space_text)
        note = None
        if inside is not None:
            completed = state["epoch"] if state is not None else 0
            if inside["epoch"] != completed:
                note = f"ignoring {INTERRUPTED}: it is older than {CHECKPOINT}"
            elif inside.get("world_size") != world_size:
                note = (f"epoch {completed + 1} starts over: it was interrupted on "
                        f"{inside.get('world_size')} process(es), this run has {world_size}")
            else:
                state = inside
        if state is None and resume:
            raise RunError(f"{self.path}: nothing to resume, no {CHECKPOINT} yet "
                           "(the run stopped during its first epoch)",
                           hint="run without --resume to start it again")
        return state, note

    def _load_state(self, name: str, genotype_text: str, space_text: str) -> dict | None:
        if not self.file(name).exists():
            return None
        state = load_pt(self.file(name), expect=(TRAIN_STATE,))
        if state.get("genotype") != genotype_text or state.get("space") != space_text:
            raise RunError(f"{self.file(name)}: belongs to another genotype or space",
                           hint="--force starts over")
        return state

    def _mkdir(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunError(f"cannot create the run folder {self.path}: {err.strerror or err}",
                           hint="choose a writable folder with --out") from None

    def _check_same(self, genotype_text: str, space_text: str) -> None:
        for name, text, what in ((GENOTYPE, genotype_text, "genotype"),
                                 (SPACE, space_text, "space (with its --set overrides)")):
            f = self.file(name)
            if f.is_file() and f.read_text(encoding="utf-8") != text:
                raise RunError(f"{self.path}: an unfinished run of another {what}",
                               hint="run the same command as before to resume it, "
                                    "or --force to start over")

    def _remove_strays(self) -> None:
        """Temporary files of writes a kill interrupted (the files they replace are whole)."""
        for name in RUN_FILES:
            for stray in self.path.glob(f".{name}.*.tmp"):
                stray.unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove this run's own files (and temp files of interrupted writes), nothing else."""
        if not self.path.is_dir():
            return
        try:
            for name in RUN_FILES:
                self.file(name).unlink(missing_ok=True)
            for stray in self.path.glob(".*.tmp"):
                stray.unlink(missing_ok=True)
        except OSError as err:
            raise RunError(f"cannot clear the run folder {self.path}: {err.strerror or err}"
                           ) from None
