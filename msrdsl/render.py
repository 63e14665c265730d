"""Views of a genotype: a Rich DAG per cell for the terminal, Graphviz DOT, and SVG/PNG files.

The terminal view carries the structure in its text layout alone (colour only decorates), so it
reads the same with colour off, in a log file, or through a pipe. Each kept edge is one line,
`source ── op ──`, and a node's edges meet at a junction pointing at the node:

    1 ── sep_conv_3x3 ──┐
    0 ── sep_conv_3x3 ──┴──▶ 2

Nodes keep the genotype's own numbering (inputs 0..inputs-1, then intermediate nodes), the
numbering of the `.genotype` text and of DARTS notation. The DOT graph follows DARTS'
`visualize.py` instead (inputs c_{k-2}, c_{k-1}; intermediate nodes 0..3; output c_{k}), the
picture readers of NAS papers know.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.panel import Panel
from rich.text import Text

from msrdsl.errors import MsrdslError
from msrdsl.genotype import CellGenotype, Genotype

__all__ = ["render_genotype", "render_cell", "genotype_to_dot", "render_svg_png", "GenotypeView"]

_TITLES = {"normal": "normal cell", "reduce": "reduction cell"}


def _op_style(op: str) -> str:
    """Colour by operator family, so a glance tells convolutions from pools and skips."""
    if op.startswith("sep_conv"):
        return "cyan"
    if op.startswith("dil_conv"):
        return "magenta"
    if "pool" in op:
        return "yellow"
    if op == "skip_connect":
        return "green"
    if op == "none":
        return "dim"
    return "blue"


def input_label(index: int, inputs: int) -> str:
    """c_{k-2}, c_{k-1} for DARTS' two inputs: the outputs of the two previous cells."""
    return f"c_{{k-{inputs - index}}}"


class _Glyphs:
    """Box-drawing characters, or ASCII stand-ins for consoles that cannot show them."""

    def __init__(self, ascii_only: bool):
        if ascii_only:
            self.line, self.top, self.mid, self.bottom, self.arrow = "-", "+", "+", "+", ">"
        else:
            self.line, self.top, self.mid, self.bottom, self.arrow = "─", "┐", "┤", "┴", "▶"


def _cell_lines(cell: CellGenotype, reduction: bool, glyphs: _Glyphs) -> Iterator[Text]:
    g = glyphs
    inputs = ", ".join(f"{i} = {input_label(i, cell.inputs)}" for i in range(cell.inputs))
    yield Text.assemble(("inputs  ", "bold"), inputs)
    if reduction:
        yield Text("        (edges from the inputs have stride 2)", style="dim")
    yield Text("")
    src_w = max([len(str(e.input)) for node in cell.nodes for e in node.edges] or [1])
    op_w = max([len(e.op) for node in cell.nodes for e in node.edges] or [1])
    for pos, node in enumerate(cell.nodes):
        j = cell.node_index(pos)
        last = len(node.edges) - 1
        for k, edge in enumerate(node.edges):
            line = Text()
            line.append(str(edge.input).rjust(src_w), style="bold")
            line.append(f" {g.line}{g.line} ")
            line.append(edge.op, style=_op_style(edge.op))
            line.append(" " + g.line * (op_w - len(edge.op) + 2))
            if last == 0:
                line.append(g.line * 3 + g.arrow + " ")
                line.append(str(j), style="bold")
            elif k == 0:
                line.append(g.top)
            elif k < last:
                line.append(g.mid)
            else:
                line.append(g.bottom + g.line * 2 + g.arrow + " ")
                line.append(str(j), style="bold")
            yield line
    yield Text("")
    concat = ", ".join(str(n) for n in cell.concat)
    yield Text.assemble(("output  ", "bold"), f"c_{{k}} = concat({concat})")


def render_cell(cell: CellGenotype, title: str = "cell", *, reduction: bool = False,
                ascii_only: bool = False, width: int | None = None) -> Panel:
    """One cell as a panel: inputs, each node's kept edges meeting at the node, the concat."""
    lines = list(_cell_lines(cell, reduction, _Glyphs(ascii_only)))
    inner = max(width or 0, *(line.cell_len for line in lines))
    # Border and one space of padding on each side: 4 columns around the drawing.
    return Panel(Group(*lines), title=title, title_align="left", width=inner + 4, padding=(0, 1))


class GenotypeView:
    """Both cells of a genotype, headed by its name and source; fits 80 columns."""

    def __init__(self, genotype: Genotype):
        self.genotype = genotype

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        g = self.genotype
        yield Text(g.name, style="bold")
        if g.source:
            yield Text(f"source: {g.source}", style="dim")
        glyphs = _Glyphs(options.ascii_only)
        # Both panels as wide as the wider drawing, so the two cells line up.
        width = max(line.cell_len for name, cell in g.cells.items()
                    for line in _cell_lines(cell, name == "reduce", glyphs))
        for cell_name, cell in g.cells.items():
            yield render_cell(cell, _TITLES[cell_name], reduction=cell_name == "reduce",
                              ascii_only=options.ascii_only, width=width)


def render_genotype(g: Genotype) -> GenotypeView:
    """A Rich renderable drawing both cells of `g` as DAGs."""
    return GenotypeView(g)


# ---------------------------------------------------------------------------------------------
# Graphviz


def _dot_id(*parts: object) -> str:
    return _dot_string("/".join(str(p) for p in parts))


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _cell_dot(cell: CellGenotype, cell_name: str) -> Iterator[str]:
    def node_id(n: int) -> str:
        return _dot_id(cell_name, n)

    def label(n: int) -> str:
        return input_label(n, cell.inputs) if n < cell.inputs else str(n - cell.inputs)

    out_id = _dot_id(cell_name, "out")
    yield f"  subgraph {_dot_string('cluster_' + cell_name)} {{"
    yield f"    label={_dot_string(_TITLES.get(cell_name, cell_name))};"
    for n in range(cell.inputs):
        yield f"    {node_id(n)} [label={_dot_string(label(n))}, fillcolor=darkseagreen2];"
    for n in cell.node_indices:
        yield f"    {node_id(n)} [label={_dot_string(label(n))}, fillcolor=lightblue];"
    yield f"    {out_id} [label={_dot_string('c_{k}')}, fillcolor=palegoldenrod];"
    for pos, node in enumerate(cell.nodes):
        for edge in node.edges:
            yield (f"    {node_id(edge.input)} -> {node_id(cell.node_index(pos))} "
                   f"[label={_dot_string(edge.op)}];")
    for n in cell.concat:
        yield f"    {node_id(n)} -> {out_id} [color=gray];"
    yield "  }"


def genotype_to_dot(g: Genotype, cells: Iterable[str] = ("normal", "reduce")) -> str:
    """Graphviz DOT text: one cluster per cell, edges labelled with their operators."""
    lines = [
        f"digraph {_dot_string(g.name)} {{",
        "  rankdir=LR;",
        '  node [shape=rect, style=filled, fontname="Helvetica", height=0.5, width=0.5];',
        '  edge [fontname="Helvetica"];',
    ]
    for cell_name in cells:
        lines.extend(_cell_dot(getattr(g, cell_name), cell_name))
    lines.append("}")
    return "\n".join(lines) + "\n"


_FORMATS = ("svg", "png", "pdf")
_INSTALL_HINT = ("pip install graphviz (the Python package), and install Graphviz's `dot` "
                 "program (apt install graphviz, brew install graphviz, or graphviz.org)")


def render_svg_png(g: Genotype, path: str | Path, format: str | None = None) -> Path:
    """Draw `g` with Graphviz into `path` (svg, png or pdf; by default from the suffix)."""
    path = Path(path)
    fmt = (format or path.suffix.lstrip(".") or "svg").lower()
    if fmt not in _FORMATS:
        raise MsrdslError(f"cannot draw a genotype as '{fmt}'",
                          hint="choose one of: " + ", ".join(_FORMATS))
    try:
        import graphviz
    except ImportError:
        raise MsrdslError("drawing SVG or PNG needs the graphviz Python package",
                          hint=_INSTALL_HINT) from None
    try:
        data = graphviz.Source(genotype_to_dot(g)).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise MsrdslError("drawing SVG or PNG needs Graphviz's `dot` program on the PATH",
                          hint=_INSTALL_HINT) from None
    except graphviz.CalledProcessError as exc:  # a bug in our DOT text, not a user error
        raise RuntimeError(f"Graphviz rejected the DOT text: {exc}") from exc
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------
# Comparisons


def render_comparison(comparison) -> Group:
    """Genotypes (or rules) side by side: the operator on every kept edge, differences marked
    with `*`, cell depth and width, Kendall's tau between edge rankings, parameter counts."""
    from rich.table import Table

    c = comparison
    parts: list = []
    if c.epoch is not None:
        heading = Text(f"epoch {c.epoch}", style="bold")
        if c.derived_from:
            sources = sorted(set(c.derived_from.values()))
            heading.append(f"  (derived from the {' and '.join(sources)})", style="dim")
        parts.append(heading)
    for cell_type in ("normal", "reduce"):
        table = Table(title=_TITLES[cell_type], title_justify="left", box=None, pad_edge=False)
        table.add_column("edge", no_wrap=True)
        for label in c.labels:
            table.add_column(label, no_wrap=True)
        table.add_column("")
        for (source, target), ops, differs in c.rows(cell_type):
            cells = [Text(op or "·", style=_op_style(op) if op else "dim") for op in ops]
            table.add_row(f"{source} -> {target}", *cells,
                          Text("*", style="bold red") if differs else "")
        parts.append(table)
    shape = Table(title="cell shape (Shu et al.) and size", title_justify="left", box=None,
                  pad_edge=False)
    shape.add_column("")
    for label in c.labels:
        shape.add_column(label, justify="right")
    for t in ("normal", "reduce"):
        shape.add_row(f"{t} depth", *[str(c.shape(lbl)[t]["depth"]) for lbl in c.labels])
        shape.add_row(f"{t} width", *[f"{c.shape(lbl)[t]['width']}C" for lbl in c.labels])
    if c.counts:
        first = c.counts[c.labels[0]]
        shape.add_row(f"params ({first['setting']})",
                      *[f"{c.counts[lbl]['params'] / 1e6:.2f} M" for lbl in c.labels])
        shape.add_row("params with aux. tower",
                      *[f"{c.counts[lbl]['params_aux'] / 1e6:.2f} M" for lbl in c.labels])
        shape.add_row("mult-adds", *[f"{c.counts[lbl]['mult_adds'] / 1e6:.0f} M" for lbl in c.labels])
    parts.append(shape)
    taus = c.taus()
    if taus:
        tau = Table(title="Kendall's tau between edge strengths", title_justify="left", box=None,
                    pad_edge=False)
        tau.add_column("rules")
        tau.add_column("normal", justify="right")
        tau.add_column("reduce", justify="right")
        for (a, b), v in taus.items():
            tau.add_row(f"{a} vs {b}", f"{v['normal']:+.2f}", f"{v['reduce']:+.2f}")
        parts.append(tau)
    if c.scores:
        parts.append(_score_tables(c))
    return Group(*parts)


def _score_tables(c) -> Group:
    """Each rule's score of every operator on every edge (the chosen one in bold)."""
    from rich.table import Table

    tables = []
    ops = c.operators
    for label in c.labels:
        if label not in c.scores:
            continue
        for cell_type in ("normal", "reduce"):
            table = Table(title=f"{label}: {cell_type} op scores (edge strength last)",
                          title_justify="left", box=None, pad_edge=False)
            table.add_column("edge", no_wrap=True)
            for op in ops:
                table.add_column(op, justify="right")
            table.add_column("strength", justify="right")
            rows = c.scores[label][cell_type]
            for (source, target), op_row, strength in zip(c.edges, rows["op"], rows["edge"]):
                table.add_row(f"{source} -> {target}", *[f"{v:.4g}" for v in op_row],
                              f"{strength:.4g}")
            tables.append(table)
    return Group(*tables)
