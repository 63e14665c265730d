"""IR and syntax -> canonical text: one entry per line, two-space indents, schema order.

`format_file` lays out what a file wrote (comments kept); `format_space` writes a whole Space with
every setting explicit (what `fmt --flatten` prints and a run directory stores); `format_genotype`
writes a genotype. Parsing any of these gives back the same IR.
"""

from __future__ import annotations

import math
import unicodedata
from fractions import Fraction
from typing import Any

import attrs

from msrdsl.genotype import CellGenotype, Genotype
from msrdsl.ir import Call, Name, Negate, OpDef, OpVariant, Rule, SelectSpec, Space, meta, schema
from msrdsl.lang.syntax import Entry, OpComments, RuleDecl, SpaceDecl, SpaceFile

INDENT = "  "


def format_value(value: Any) -> str:
    """A value as the language writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Fraction):
        return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Name):
        return value.id
    if isinstance(value, Negate):
        return "-" + format_value(value.expr)
    if isinstance(value, Call):
        return _call(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    raise TypeError(f"cannot format {value!r}")


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _string(text: str) -> str:
    """A double-quoted literal. Control characters and line separators are escaped, so that the
    text stays on one line for every tool (editors, `splitlines`, diagnostics); other characters,
    accented or not, are written as they are."""
    out = []
    for ch in text:
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _float(x: float) -> str:
    if math.isinf(x) or math.isnan(x):
        raise ValueError(f"{x} has no literal in the language")
    text = repr(x)
    if "e" in text or "E" in text:
        mantissa, _, exp = text.partition("e")
        return f"{mantissa}e{int(exp)}"
    return text


def _call(call: Call, tuples: bool = False) -> str:
    args = [_arg(a, tuples) for a in call.args]
    args += [f"{k}={_arg(v, tuples)}" for k, v in call.kwargs]
    return f"{call.name}({', '.join(args)})" if args or not tuples else call.name


def _arg(value: Any, tuples: bool) -> str:
    # Inside operator pipelines a pair is a (height, width) tuple, elsewhere a list.
    if tuples and isinstance(value, tuple) and value:
        # `(x,)`: a one-element tuple needs its comma; an empty one is only writable as `[]`.
        inner = ", ".join(_arg(v, tuples) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return format_value(value)


# ---------------------------------------------------------------------------------------------
# Operators and rules


def format_op(op: OpDef, notes: OpComments | None = None) -> str:
    notes = notes or OpComments()
    params = f"({', '.join(op.params)})" if op.params else ""
    if len(op.variants) == 1 and op.variants[0].stride is None:
        return f"op {op.name}{params} = {_pipeline(op.variants[0])}" + _trail(notes.trailing)
    lines = [f"op {op.name}{params} {{" + _trail(notes.trailing)]
    variant_notes = notes.variants or [((), None)] * len(op.variants)
    for v, (leading, trailing) in zip(op.variants, variant_notes):
        lines += [INDENT + c for c in leading]
        lines.append(f"{INDENT}stride {v.stride}: {_pipeline(v)}" + _trail(trailing))
    lines += [INDENT + c for c in notes.end_comments]
    lines.append("}" + _trail(notes.close_trailing))
    return "\n".join(lines)


def _pipeline(variant: OpVariant) -> str:
    return " | ".join(_call(step, tuples=True) for step in variant.steps)


def _rule_entries(rule: Rule) -> list[Entry]:
    out = [Entry("op", Call(rule.op.direction, (rule.op.score,))),
           Entry("edge", Call(rule.edge.direction, (rule.edge.score,)))]
    if rule.exclude:
        out.append(Entry("exclude", tuple(Name(n) for n in rule.exclude)))
    return out


def format_rule(rule: Rule) -> str:
    return _block_text(f"rule {rule.name}", _rule_entries(rule), 0)


# ---------------------------------------------------------------------------------------------
# Entries


def _entry_lines(e: Entry, depth: int) -> list[str]:
    pad = INDENT * depth
    lines = [pad + c for c in e.comments]
    head = e.key if e.value is None else f"{e.key} {format_value(e.value)}"
    if e.block is None:
        lines.append(pad + head + _trail(e.trailing))
    elif not e.block and not e.end_comments and not (e.trailing and e.close_trailing):
        lines.append(pad + head + " {}" + _trail(e.trailing or e.close_trailing))
    else:
        lines.append(pad + head + " {" + _trail(e.trailing))
        for inner in e.block:
            lines += _entry_lines(inner, depth + 1)
        lines += [pad + INDENT + c for c in e.end_comments]
        lines.append(pad + "}" + _trail(e.close_trailing))
    return lines


def _trail(comment: str | None) -> str:
    return f"  {comment}" if comment else ""


def _block_text(header: str, entries: list[Entry] | tuple[Entry, ...], depth: int,
                decl: RuleDecl | SpaceDecl | None = None) -> str:
    lines = [header + " {" + _trail(decl.trailing if decl else None)]
    for e in entries:
        lines += _entry_lines(e, depth + 1)
    if decl is not None:
        lines += [INDENT + c for c in decl.end_comments]
    lines.append("}" + _trail(decl.close_trailing if decl else None))
    return "\n".join(lines)


def _ordered(entries: tuple[Entry, ...], cls: type | None) -> tuple[Entry, ...]:
    """Entries in the schema's order, blocks ordered recursively."""
    if cls is None:
        return entries
    order = [f.name for f in schema(cls)]
    if cls is SelectSpec:
        order = ["op", "edge", "exclude", *order]
    rank = {k: i for i, k in enumerate(order)}
    out = []
    for e in sorted(entries, key=lambda e: rank.get(e.key, len(rank))):
        inner_cls = None
        field = next((f for f in schema(cls) if f.name == e.key), None)
        if field is not None and meta(field)["kind"] == "block":
            inner_cls = meta(field)["cls"]
        block = _ordered(e.block, inner_cls) if e.block is not None else None
        out.append(attrs.evolve(e, block=block))
    return tuple(out)


def format_file(syntax: SpaceFile) -> str:
    """A parsed file in canonical layout, as written (no `extends` resolved), comments kept."""
    parts = []
    notes = syntax.op_comments or [OpComments()] * len(syntax.ops)
    for op, comments in zip(syntax.ops, notes):
        parts.append("\n".join([*comments.comments, format_op(op, comments)]))
    for rule in syntax.rules:
        parts.append("\n".join([*rule.comments, _block_text(f"rule {rule.name}",
                                                              _ordered(rule.entries, None), 0, rule)]))
    for space in syntax.spaces:
        parts.append("\n".join([*space.comments, _space_header_text(space)]))
    text = _join(parts, syntax.ops)
    if syntax.tail_comments:
        text += "\n" + "\n".join(syntax.tail_comments) + "\n"
    return text


def _space_header_text(space: SpaceDecl) -> str:
    header = f"space {space.name}"
    if space.extends is not None:
        header += f" extends {format_value(space.extends)}"
    return _block_text(header, _ordered(space.entries, Space), 0, space)


def _join(parts: list[str], ops: tuple) -> str:
    # Consecutive one-line operator definitions stay together; everything else is a paragraph.
    out = ""
    for i, part in enumerate(parts):
        if i:
            tight = i < len(ops) and "\n" not in part and "\n" not in parts[i - 1]
            out += "\n" if tight else "\n\n"
        out += part
    return out + "\n"


# ---------------------------------------------------------------------------------------------
# Whole spaces, every setting explicit


def space_entries(obj: Any) -> list[Entry]:
    """The entries that write every setting of a section explicitly."""
    out = []
    for f in schema(type(obj)):
        if f.name == "name" and isinstance(obj, Space):
            continue
        value = getattr(obj, f.name)
        m = meta(f)
        if value is None and m["kind"] != "block":
            continue  # an optional setting left unset (a data set's root, say) is not written
        if m["kind"] == "block":
            if value is None:
                continue  # optional blocks default to absent
            head = m["head"]
            inner = [e for e in space_entries(value) if e.key != head]
            head_value = _written(getattr(value, head), meta(_field(type(value), head))) if head else None
            if isinstance(obj, Space) and f.name == "select":
                inner = [e for e in inner if e.key != "rule"]
                rule = value.rule
                if isinstance(rule, Rule):
                    head_value = None
                    inner = _rule_entries(rule) + inner
            out.append(Entry(f.name, head_value, tuple(inner)))
        else:
            out.append(Entry(f.name, _written(value, m)))
    return out


def _field(cls: type, name: str):
    return next(f for f in schema(cls) if f.name == name)


def _written(value: Any, m: dict) -> Any:
    """An IR value as the entry that writes it."""
    kind = m["kind"]
    if kind in ("name", "rule"):
        return Name(value.name if isinstance(value, Rule) else value)
    if kind == "names":
        return tuple(Name(v) for v in value)
    return value


def format_space(space: Space) -> str:
    """A whole space, flattened: its own operators and rules, then every setting explicit."""
    parts = [format_op(space.op(name)) for name in space.user_ops]
    parts += [format_rule(space.rule(name)) for name in space.user_rules]
    parts.append(_block_text(f"space {space.name}", space_entries(space), 0))
    return _join(parts, tuple(space.user_ops))


# ---------------------------------------------------------------------------------------------
# Genotypes


def format_genotype(g: Genotype, header: tuple[str, ...] = ()) -> str:
    """A genotype in the .genotype language."""
    lines = [*header, f"genotype {g.name} {{"]
    if g.source is not None:
        lines.append(f"{INDENT}source {format_value(g.source)}")
    for kind, cell in (("normal", g.normal), ("reduce", g.reduce)):
        lines += _cell_lines(kind, cell)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _cell_lines(kind: str, cell: CellGenotype) -> list[str]:
    lines = [f"{INDENT}{kind} {{"]
    for number, node in zip(cell.node_indices, cell.nodes):
        edges = " + ".join(f"{e.op}({e.input})" for e in node.edges)
        lines.append(f"{INDENT * 2}node {number} = {edges}")
    lines.append(f"{INDENT * 2}concat {format_value(tuple(cell.concat))}")
    lines.append(f"{INDENT}}}")
    return lines
