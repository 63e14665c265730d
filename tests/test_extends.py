"""`extends` and `--set`: an ablation differs from its parent exactly where it says so.

A space is flattened into {setting path: value} by walking the schema (the same description the
reader, the printer and `--set` use); two spaces are compared path by path.
"""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from msrdsl.ir import Name, Rule, Space, meta, schema
from msrdsl.lang import load_space, parse_space_syntax, read_text

ROOT = Path(__file__).resolve().parent.parent
SPACES = ROOT / "spaces"


def settings_of(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every setting of a space or section by its path, recursing into blocks; a block that is
    switched off is one path whose value is None. The space's name is the path "name"."""
    out: dict[str, Any] = {}
    if isinstance(obj, Space):
        out["name"] = obj.name
    for f in schema(type(obj)):
        if isinstance(obj, Space) and f.name == "name":
            continue
        value = getattr(obj, f.name)
        path = prefix + f.name
        if meta(f)["kind"] == "block" and value is not None:
            out.update(settings_of(value, path + "."))
        else:
            out[path] = value
    return out


def differences(a: Space, b: Space) -> set[str]:
    """The setting paths where `a` and `b` differ; a block switched off on one side is one
    difference (its path), not one per setting inside it."""
    sa, sb = settings_of(a), settings_of(b)
    diff = {p for p in sa.keys() | sb.keys() if sa.get(p, "<absent>") != sb.get(p, "<absent>")}
    return {p for p in diff if not any(p.startswith(q + ".") for q in diff)}


def written_paths(path: Path) -> set[str]:
    """The setting paths a file writes itself (its own entries, not its parent's)."""
    decl = parse_space_syntax(read_text(path), str(path)).spaces[0]
    heads = {"dataset": "name", "spectral_norm": "bound", "select": "rule", "epoch": "rule",
             "optimizer": "kind"}
    out = {"name"}

    def walk(entries, prefix):
        for e in entries:
            here = prefix + e.key
            if e.value is not None:
                out.add(here if e.block is None and e.key not in heads or _is_off(e.value)
                        else f"{here}.{heads[e.key]}" if e.key in heads else here)
                if e.key == "select":
                    out.add("select.rule")
            if e.block:
                walk(e.block, here + ".")
            if e.key in ("op", "edge", "exclude") and prefix == "select.":
                out.add("select.rule")

    walk(decl.entries, "")
    return out


def _is_off(value: Any) -> bool:
    return isinstance(value, Name) and value.id == "off"


def load(name: str, overrides: tuple[str, ...] = ()) -> Space:
    return load_space(SPACES / name, overrides)


# ---------------------------------------------------------------------------------------------
# Each shipped space against its parent

EXPECTED = {
    ("msr-max.space", "msr.space"): {"name", "select.rule", "select.record"},
    ("darts.space", "msr.space"): {
        "name", "supernet.mix", "supernet.spectral_norm", "select.rule", "select.epoch.rule",
        "select.record", "search.arch.order"},
    ("darts-full.space", "darts.space"): {"name", "dataset.split", "operators", "select.record"},
    ("msr-reference.space", "msr.space"): {"name", "supernet.mix", "select.rule",
                                           "select.record"},
    # Naming another data set starts its block afresh, so CIFAR's folder is not inherited.
    ("quickstart.space", "msr.space"): {
        "name", "dataset.name", "dataset.root", "dataset.input_size", "network.cells", "network.channels",
        "search.epochs", "evaluate.cells", "evaluate.channels", "evaluate.epochs",
        "evaluate.batch", "evaluate.cutout", "evaluate.drop_path"},
}


@pytest.mark.parametrize("child,parent", sorted(EXPECTED), ids=lambda n: n)
def test_a_space_differs_from_its_parent_exactly_where_it_says(child, parent):
    diff = differences(load(child), load(parent))
    assert diff == EXPECTED[child, parent]
    # ... and only at paths the child file writes itself, or inside a block whose head it renames.
    renamed = {"dataset.root"} if child == "quickstart.space" else set()
    assert diff <= written_paths(SPACES / child) | renamed


def test_the_ablation_changes_the_rule_not_the_supernet():
    msr, msr_max = load("msr.space"), load("msr-max.space")
    assert msr.selected_rule.op.direction == "argmin"
    assert msr_max.selected_rule.op.direction == "argmax"
    assert msr_max.selected_rule.op.score == msr.selected_rule.op.score
    # The supernet and both trainings are the same object of study.
    for section in ("dataset", "cell", "network", "supernet", "search", "evaluate"):
        assert getattr(msr_max, section) == getattr(msr, section)


def test_darts_baseline_settings():
    darts = load("darts.space")
    assert darts.supernet.mix.name == "softmax" and darts.supernet.spectral_norm is None
    assert darts.search.arch.optimizer.kind == "adam"
    assert darts.search.arch.optimizer.betas == (0.5, 0.999)
    assert darts.dataset.split == Fraction(4, 5) and darts.operators == load("msr.space").operators


def test_reference_space_adds_its_rules():
    ref, msr = load("msr-reference.space"), load("msr.space")
    assert [r.name for r in ref.rules if r not in msr.rules] == ["msr_reference",
                                                                "msr_reference_max"]
    assert ref.user_rules == ("msr_reference", "msr_reference_max")


# ---------------------------------------------------------------------------------------------
# `--set` reaches the same paths, and means what a child file would


OVERRIDES = {
    "search.epochs=5": ({"search.epochs"}, "search {\n    epochs 5\n  }"),
    "select=msr_max": ({"select.rule"}, "select msr_max"),
    "supernet.spectral_norm=off": ({"supernet.spectral_norm"}, "supernet {\n    spectral_norm off\n  }"),
    'dataset.root="/x"': ({"dataset.root"}, 'dataset {\n    root "/x"\n  }'),
    "network.reduce_at=[2, 5]": ({"network.reduce_at"}, "network {\n    reduce_at [2, 5]\n  }"),
    "supernet.spectral_norm.power_iterations=9": (
        {"supernet.spectral_norm.power_iterations"},
        "supernet {\n    spectral_norm {\n      power_iterations 9\n    }\n  }"),
    "search.arch.optimizer.lr=0.01": ({"search.arch.optimizer.lr"},
                                      "search { arch { optimizer { lr 0.01 } } }"),
    "select.epoch=last": ({"select.epoch.rule"}, "select { epoch last }"),
}


@pytest.fixture(scope="module")
def children(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("children")
    for path in SPACES.glob("*.space"):
        shutil.copy(path, folder / path.name)
    return folder


@pytest.mark.parametrize("override", sorted(OVERRIDES))
def test_set_reaches_the_same_path_as_extends(override, children):
    expected, body = OVERRIDES[override]
    parent = load("msr.space")
    by_set = load("msr.space", (override,))
    assert differences(by_set, parent) == expected
    child = children / f"child-{len(body)}.space"
    child.write_text(f'space msr_darts extends "msr.space" {{\n  {body}\n}}\n')
    assert load_space(child) == by_set


def test_set_select_matches_the_shipped_ablation():
    by_set = load("msr.space", ("select=msr_max", "select.record=[msr]"))
    assert differences(by_set, load("msr-max.space")) == {"name"}


def test_set_applies_after_extends_and_in_order():
    space = load("msr-max.space", ("search.epochs=5", "search.epochs=6"))
    assert differences(space, load("msr-max.space")) == {"search.epochs"}
    assert space.search.epochs == 6


def test_an_inline_rule_replaces_a_named_one_by_set_or_by_child(children):
    op = "argmax(mean_over_cells(-stable_rank(last_conv)))"
    edge = "argmax(max_over_ops(mean_over_cells(-stable_rank(last_conv))))"
    by_set = load("msr.space", (f"select.op={op}", f"select.edge={edge}"))
    assert isinstance(by_set.select.rule, Rule) and by_set.select.rule.op.direction == "argmax"
    assert differences(by_set, load("msr.space")) == {"select.rule"}
    child = children / "inline.space"
    child.write_text(f'space msr_darts extends "msr.space" {{\n  select {{\n    op {op}\n'
                     f'    edge {edge}\n  }}\n}}\n')
    assert load_space(child) == by_set
    # and a named rule replaces an inline one again
    grandchild = children / "named-again.space"
    grandchild.write_text('space msr_darts extends "inline.space" {\n  select msr\n}\n')
    assert load_space(grandchild) == load("msr.space")


def test_naming_another_data_set_or_optimiser_drops_the_parents_settings_inside(children):
    child = children / "renamed.space"
    child.write_text('space renamed extends "msr.space" {\n  dataset digits\n'
                     '  search { optimizer adam { lr 1e-3 } }\n}\n')
    space = load_space(child)
    assert space.dataset.name == "digits" and space.dataset.root is None
    assert space.search.optimizer.kind == "adam" and space.search.optimizer.lr == 1e-3
    # msr.space's sgd settings (momentum, lr_min) are gone: the field's own defaults apply.
    assert space.search.optimizer.lr_min == 0.001 and space.search.optimizer.schedule == "cosine"
    assert space.search.grad_clip == 5.0  # outside the renamed block, inheritance is untouched


def test_writing_a_switched_off_section_switches_it_on(children):
    """darts.space switches the spectral norm off; a child that configures it wants it back."""
    child = children / "darts-sn.space"
    child.write_text('space darts extends "darts.space" {\n'
                     '  supernet {\n    spectral_norm {\n      power_iterations 3\n    }\n  }\n}\n')
    space = load_space(child)
    assert space.supernet.spectral_norm is not None
    assert space.supernet.spectral_norm.power_iterations == 3
    assert space.supernet.spectral_norm.bound == 1.0  # the schema's default, not the grand-parent's
    by_set = load("darts.space", ("supernet.spectral_norm.power_iterations=3",))
    assert by_set == space
