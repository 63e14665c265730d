"""Genotype views: the terminal drawing (snapshot), DOT text, and SVG/PNG through Graphviz.

Set MSRDSL_UPDATE_SNAPSHOTS=1 to rewrite tests/snapshots/*.txt; read the diff before committing.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
import types
from pathlib import Path

import pytest
from hypothesis import given, settings
from rich.console import Console

from msrdsl.errors import MsrdslError
from msrdsl.genotype import Genotype
from msrdsl.genotype_io import read_darts_genotypes
from msrdsl.render import genotype_to_dot, render_genotype, render_svg_png
from strategies_genotype import genotypes

DATA = Path(__file__).parent / "data"
SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("MSRDSL_UPDATE_SNAPSHOTS") == "1"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def published() -> dict[str, Genotype]:
    return read_darts_genotypes((DATA / "published-genotypes.txt").read_text())


def msr_darts() -> Genotype:
    from attrs import evolve

    return evolve(published()["MSRDARTS"], name="msr_darts",
                  source="mtaecchhi/msrdarts genotypes.py (MSR-DARTS, Machida et al.)")


class _AsciiFile(io.StringIO):
    encoding = "ascii"


def draw(g: Genotype, *, color: bool = False, ascii_file: bool = False, width: int = 80) -> str:
    out = _AsciiFile() if ascii_file else io.StringIO()
    console = Console(file=out, width=width, color_system="truecolor" if color else None,
                      force_terminal=color, legacy_windows=False)
    console.print(render_genotype(g))
    # Rich may leave a space at the end of a wrapped line; it carries nothing.
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()) + "\n"


def test_snapshot_msr_darts_colour_off_80_columns() -> None:
    text = draw(msr_darts())
    path = SNAPSHOTS / "render_msr_darts.txt"
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text()
    assert "\x1b" not in text


def test_colour_only_decorates() -> None:
    g = msr_darts()
    coloured = draw(g, color=True)
    assert "\x1b[" in coloured
    assert ANSI.sub("", coloured) == draw(g)


def test_ascii_console_gets_ascii_drawing() -> None:
    text = draw(msr_darts(), ascii_file=True)
    assert text.isascii()
    assert "| 0 -- sep_conv_3x3 --+--> 2" in text


@pytest.mark.parametrize("name", sorted(published()))
def test_published_fit_80_columns(name: str) -> None:
    assert max(len(line) for line in draw(published()[name]).splitlines()) <= 80


EDGE_LINE = re.compile(r"(\d+) [─-]{2} (\w+) [─-]+[┐┤┴+─-]*(?:[▶>] (\d+))?")


def edges_from_drawing(text: str) -> dict[str, list[list[tuple[str, int]]]]:
    """Read the drawing back: (op, input) per node, per cell, from the text layout alone."""
    cells: dict[str, list[list[tuple[str, int]]]] = {}
    current: list[list[tuple[str, int]]] = []
    pending: list[tuple[str, int]] = []
    for line in text.splitlines():
        if "normal cell" in line or "reduction cell" in line:
            current = cells.setdefault("normal" if "normal" in line else "reduce", [])
        m = EDGE_LINE.search(line)
        if m:
            pending.append((m.group(2), int(m.group(1))))
            if m.group(3) is not None:
                current.append(pending)
                pending = []
    return cells


@settings(max_examples=40, deadline=None)
@given(genotypes())
def test_drawing_carries_the_structure(g: Genotype) -> None:
    read_back = edges_from_drawing(draw(g, width=200))
    for cell_name in ("normal", "reduce"):
        cell = getattr(g, cell_name)
        assert read_back[cell_name] == [[(e.op, e.input) for e in node.edges]
                                        for node in cell.nodes]


# ---------------------------------------------------------------------------------------------
# DOT

DOT_EDGE = re.compile(r'"(\w+)/(\w+)" -> "(\w+)/(\w+)"(?: \[label="(\w+)"\])?')


@settings(max_examples=40, deadline=None)
@given(genotypes())
def test_dot_has_every_edge_and_the_concat(g: Genotype) -> None:
    dot = genotype_to_dot(g)
    assert dot.startswith(f'digraph "{g.name}" {{') and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    for cell_name in ("normal", "reduce"):
        cell = getattr(g, cell_name)
        found = [m.groups() for m in DOT_EDGE.finditer(dot) if m.group(1) == cell_name]
        ops = [(int(src), int(dst), op) for _, src, _, dst, op in found if dst != "out"]
        assert ops == [(e.input, cell.node_index(pos), e.op)
                       for pos, node in enumerate(cell.nodes) for e in node.edges]
        outs = [int(src) for _, src, _, dst, _ in found if dst == "out"]
        assert outs == list(cell.concat)


def test_dot_labels_follow_darts_visualize() -> None:
    dot = genotype_to_dot(msr_darts())
    assert '"normal/0" [label="c_{k-2}", fillcolor=darkseagreen2];' in dot
    assert '"normal/1" [label="c_{k-1}", fillcolor=darkseagreen2];' in dot
    assert '"reduce/5" [label="3", fillcolor=lightblue];' in dot
    assert '"normal/out" [label="c_{k}", fillcolor=palegoldenrod];' in dot
    assert '"normal/1" -> "normal/2" [label="sep_conv_3x3"];' in dot
    assert 'label="reduction cell";' in dot and "rankdir=LR;" in dot
    only_normal = genotype_to_dot(msr_darts(), cells=("normal",))
    assert "cluster_reduce" not in only_normal and "cluster_normal" in only_normal


# ---------------------------------------------------------------------------------------------
# SVG / PNG


def test_svg_needs_the_graphviz_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "graphviz", None)  # import graphviz -> ImportError
    with pytest.raises(MsrdslError) as info:
        render_svg_png(msr_darts(), tmp_path / "g.svg")
    assert "pip install graphviz" in info.value.hint and "dot" in info.value.hint


def _fake_graphviz(pipe) -> types.ModuleType:
    module = types.ModuleType("graphviz")

    class ExecutableNotFound(RuntimeError):
        pass

    class CalledProcessError(RuntimeError):
        pass

    class Source:
        def __init__(self, text: str):
            self.text = text

        def pipe(self, format: str) -> bytes:
            return pipe(self.text, format, module)

    module.ExecutableNotFound = ExecutableNotFound
    module.CalledProcessError = CalledProcessError
    module.Source = Source
    return module


def test_svg_needs_the_dot_program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(text, fmt, module):
        raise module.ExecutableNotFound("dot")

    monkeypatch.setitem(sys.modules, "graphviz", _fake_graphviz(missing))
    with pytest.raises(MsrdslError, match="`dot` program") as info:
        render_svg_png(msr_darts(), tmp_path / "g.png")
    assert "install Graphviz" in info.value.hint


def test_svg_writes_what_graphviz_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fine(text, fmt, module):
        calls.append((text, fmt))
        return b"<svg/>"

    monkeypatch.setitem(sys.modules, "graphviz", _fake_graphviz(fine))
    out = render_svg_png(msr_darts(), tmp_path / "g.svg")
    assert out.read_bytes() == b"<svg/>"
    assert calls == [(genotype_to_dot(msr_darts()), "svg")]
    render_svg_png(msr_darts(), tmp_path / "g.out", "png")
    assert calls[-1][1] == "png"
    with pytest.raises(MsrdslError, match="cannot draw a genotype as 'gif'"):
        render_svg_png(msr_darts(), tmp_path / "g.gif")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_svg_with_real_graphviz(tmp_path: Path) -> None:
    pytest.importorskip("graphviz")
    out = render_svg_png(msr_darts(), tmp_path / "g.svg")
    assert b"<svg" in out.read_bytes() and b"sep_conv_3x3" in out.read_bytes()
