"""Pieces every data source shares: the info record, argument checks, seeded splits."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from attrs import frozen

from msrdsl.errors import DataError, did_you_mean


@frozen
class DatasetInfo:
    """What a model needs to know about a data set: its name, image shape and class count."""

    name: str
    channels: int
    input_size: int
    classes: int


# The test part of the sets that ship without one (digits, synthetic) is drawn once with this seed
# and never with the run's seed, so test accuracy means the same images in every run.
FIXED_SPLIT_SEED = 0
TEST_FRACTION = 0.2


def mix_seed(*parts: Any) -> int:
    """A 63-bit seed that is a pure, process-independent function of `parts`."""
    # hash() is salted per process; a digest of the repr is stable across processes and machines.
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def check_input_size(name: str, input_size: int | None, default: int) -> int:
    """The requested image side, or the data set's default; a DataError for a nonsense value."""
    if input_size is None:
        return default
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise DataError(
            f"dataset '{name}': input_size must be a positive integer, got {input_size!r}",
            hint=f"{name} uses {default} when input_size is not given",
        )
    return input_size


def check_options(name: str, options: Mapping[str, Any], allowed: Mapping[str, Any]) -> dict[str, Any]:
    """`allowed` (name -> default) overridden by `options`; unknown names are a DataError."""
    for key in options:
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise DataError(
                f"dataset '{name}' has no option '{key}' (its options: {known})",
                hint=did_you_mean(key, allowed) if allowed else None,
            )
    return {**allowed, **options}


def check_root(name: str, root: str | None, layout: str) -> Path:
    """The root folder as a Path; a DataError when a folder-backed set is given none."""
    if root is None or str(root) == "":
        raise DataError(
            f"dataset '{name}' reads from a folder, but no root folder was given",
            hint=f"set root to the folder that holds {layout}",
        )
    return Path(root).expanduser()


def split_indices(n: int, fraction: float, seed: int, *, what: str) -> tuple[list[int], list[int]]:
    """A seeded permutation of range(n) cut at round(fraction * n); each part in ascending order."""
    # The space IR gives a Fraction (4/5); exact arithmetic is fine, formatting wants a float.
    if not 0 < fraction < 1:
        raise DataError(f"{what}: split must lie strictly between 0 and 1, got {fraction}")
    first = int(round(fraction * n))
    if first == 0 or first == n:
        share = float(fraction)
        raise DataError(
            f"{what}: {n} images cannot be split {share:g} : {1 - share:g} into two non-empty parts",
            hint="use more images or a split closer to 0.5",
        )
    generator = torch.Generator().manual_seed(mix_seed("split", seed))
    order = torch.randperm(n, generator=generator)
    # Ascending order inside each part keeps unshuffled loaders in the files' own order.
    return sorted(order[:first].tolist()), sorted(order[first:].tolist())


def positive_int(name: str, key: str, value: Any) -> int:
    """`value` if it is a positive integer, else a DataError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"dataset '{name}': option {key} must be a positive integer, got {value!r}")
    return value
