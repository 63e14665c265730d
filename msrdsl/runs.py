"""Reading a finished (or running) search's directory: its space, records and saved supernets.

What `derive`, `compare` and `plot` need, without training: any rule whose base criteria the run
recorded is re-derived from `epochs.jsonl` alone; any other rule from the saved supernet weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from msrdsl.errors import RunError, SpaceError
from msrdsl.genotype import Genotype
from msrdsl.ir import Rule, Space


class Run:
    """A search run directory, read lazily."""

    def __init__(self, path: str | Path):
        from msrdsl.search.rundir import RunDir

        self.path = Path(path)
        self.dir = RunDir(self.path)
        if not self.path.is_dir():
            raise RunError(f"no run directory at '{path}'")
        if not self.dir.space_file.is_file():
            raise RunError(f"'{path}' is not a search run directory (no {self.dir.space_file.name})",
                           hint="give the folder that `msrdsl search --out` wrote")
        self._space: Space | None = None
        self._records: list[dict[str, Any]] | None = None

    @property
    def space(self) -> Space:
        if self._space is None:
            from msrdsl.lang import load_space

            self._space = load_space(self.dir.space_file)
        return self._space

    @property
    def records(self) -> list[dict[str, Any]]:
        if self._records is None:
            self._records = _read_records(self.dir.epochs_file)
        return self._records

    def record(self, epoch: int | None) -> dict[str, Any]:
        """The record of `epoch` (default: the epoch the run chose, else its last)."""
        if not self.records:
            raise RunError(f"{self.dir.epochs_file} holds no finished epoch yet")
        if epoch is None:
            epoch = self.chosen_epoch()
        for rec in self.records:
            if rec["epoch"] == epoch:
                return rec
        raise RunError(f"the run has no epoch {epoch}",
                       hint=f"finished epochs: 0 to {self.records[-1]['epoch']}")

    def chosen_epoch(self) -> int:
        final = self.dir.final_json
        if final.is_file():
            return int(json.loads(final.read_text())["epoch"])
        from msrdsl.derive import epoch_choice

        rule = self.space.select.epoch
        return epoch_choice([r["valid_loss"] for r in self.records], rule.rule, rule.patience)

    def rule(self, name_or_space: str) -> Rule:
        """A rule by name (the run's, the prelude's) or the selected rule of a .space file."""
        if name_or_space.endswith(".space"):
            from msrdsl.lang import load_space

            other = load_space(name_or_space)
            return other.selected_rule
        names = {r.name: r for r in self.space.rules}
        if name_or_space not in names:
            from msrdsl.errors import did_you_mean

            raise SpaceError(f"unknown rule '{name_or_space}'", hint=did_you_mean(name_or_space, names))
        return names[name_or_space]

    def genotype(self, rule: Rule, epoch: int | None = None) -> tuple[Genotype, str]:
        """The genotype `rule` picks at `epoch`, and where it was derived from: the supernet saved
        after that epoch when it was kept, else the base criteria the epoch's record holds."""
        from msrdsl.criteria import ScoreContext, derive_with_rule

        rec = self.record(epoch)
        if self.dir.weights_file(rec["epoch"]).is_file():
            return derive_with_rule(self.score_context(rec["epoch"]), rule), "saved supernet"
        try:
            ctx = ScoreContext.from_record(self.space, rec.get("scores", {}))
            return derive_with_rule(ctx, rule), "recorded scores"
        except SpaceError:
            kept = ", ".join(str(e) for e in self.dir.kept_epochs()) or "none"
            raise RunError(f"rule '{rule.name}' needs criteria this run did not record, and the "
                           f"supernet of epoch {rec['epoch']} was not kept (kept: {kept})") from None

    def score_context(self, epoch: int):
        """Criteria over the supernet saved after `epoch` (rebuilt from the run's space)."""
        from msrdsl.criteria import ScoreContext

        return ScoreContext(self.space, self.supernet(epoch), self.valid_batches)

    def valid_batches(self):
        """A few validation batches of the run's data, for criteria that measure on data."""
        from msrdsl.data import make_loader, search_split

        s = self.space
        _, valid = search_split(s.dataset.name, root=s.dataset.root, input_size=s.dataset.input_size,
                                split=s.dataset.split, seed=s.search.seed)
        return make_loader(valid, batch_size=s.search.batch, shuffle=False, seed=s.search.seed, epoch=0)

    def supernet(self, epoch: int):
        import torch

        from msrdsl.data import dataset_info
        from msrdsl.nn import compile_supernet

        weights = self.dir.weights_file(epoch)
        if not weights.is_file():
            kept = ", ".join(str(e) for e in self.dir.kept_epochs()) or "none"
            raise RunError(f"the supernet of epoch {epoch} was not kept (kept: {kept})",
                           hint="a rule recorded in epochs.jsonl can still be derived for any epoch")
        s = self.space
        info = dataset_info(s.dataset.name, root=s.dataset.root, input_size=s.dataset.input_size)
        net = compile_supernet(s, info)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except Exception as err:  # a truncated or foreign file: say which and why
            raise RunError(f"cannot load {weights}: {err}") from None
        net.eval()
        return net


def _read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise RunError(f"no {path.name} in {path.parent}")
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise RunError(f"{path}:{number}: not a JSON record ({err.msg})") from None
    return out
