"""Text -> syntax tree: the Lark parser, located syntax errors, and the tree of entries.

A space's body stays a tree of generic `Entry`s here; `interpret` gives it meaning through the
schema in msrdsl/ir.py. Operator definitions and genotypes have their own syntax and become IR
directly. Comments are kept, attached to the entry they precede or end, so `msrdsl fmt --write`
never deletes what a user wrote.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from importlib import resources
from collections.abc import Sequence
from typing import Any

import attrs
from attrs import field, frozen
from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from msrdsl.errors import GenotypeError, Location, MsrdslError, SpaceSyntaxError
from msrdsl.genotype import CellGenotype, Edge, Genotype, Node
from msrdsl.ir import Call, Name, Negate, OpDef, OpVariant


@frozen
class Entry:
    """`key value`, `key { ... }` or `key value { ... }` inside a space or rule."""

    key: str
    value: Any = None  # None: no head value
    block: tuple[Entry, ...] | None = None  # None: no braces
    loc: Location | None = field(default=None, eq=False)
    key_loc: Location | None = field(default=None, eq=False)
    value_loc: Location | None = field(default=None, eq=False)
    # Comments travel with what they annotate, so `fmt` can reorder entries without losing any:
    # the lines before the entry, the one ending its first line, the lines ending its block, and
    # the one after its closing brace.
    comments: tuple[str, ...] = field(default=(), eq=False)
    trailing: str | None = field(default=None, eq=False)
    end_comments: tuple[str, ...] = field(default=(), eq=False)
    close_trailing: str | None = field(default=None, eq=False)


@frozen
class RuleDecl:
    name: str
    entries: tuple[Entry, ...]
    loc: Location | None = field(default=None, eq=False)
    comments: tuple[str, ...] = field(default=(), eq=False)
    trailing: str | None = field(default=None, eq=False)
    end_comments: tuple[str, ...] = field(default=(), eq=False)
    close_trailing: str | None = field(default=None, eq=False)


@frozen
class SpaceDecl:
    name: str
    extends: str | None
    entries: tuple[Entry, ...]
    loc: Location | None = field(default=None, eq=False)
    extends_loc: Location | None = field(default=None, eq=False)
    comments: tuple[str, ...] = field(default=(), eq=False)
    trailing: str | None = field(default=None, eq=False)
    end_comments: tuple[str, ...] = field(default=(), eq=False)
    close_trailing: str | None = field(default=None, eq=False)


@frozen
class OpComments:
    """The comments around one operator definition (the IR's OpDef carries none)."""

    comments: tuple[str, ...] = ()
    trailing: str | None = None
    # (leading comments, trailing comment) of each `stride N:` line
    variants: tuple[tuple[tuple[str, ...], str | None], ...] = ()
    end_comments: tuple[str, ...] = ()
    close_trailing: str | None = None


@frozen
class SpaceFile:
    """Everything one .space file declares, in source order."""

    path: str
    ops: tuple[OpDef, ...]
    rules: tuple[RuleDecl, ...]
    spaces: tuple[SpaceDecl, ...]
    op_comments: tuple[OpComments, ...] = field(default=(), eq=False)
    tail_comments: tuple[str, ...] = field(default=(), eq=False)


# ---------------------------------------------------------------------------------------------
# The parser

# What the user sees instead of Lark's terminal names.
_TOKEN_NAMES = {
    "NAME": "a name", "INT": "a whole number", "FLOAT": "a number", "STRING": "a quoted string",
    "LBRACE": "'{'", "RBRACE": "'}'", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'",
    "COMMA": "','", "EQUAL": "'='", "COLON": "':'", "VBAR": "'|'", "MINUS": "'-'", "SLASH": "'/'",
    "PLUS": "'+'", "CELL_TYPE": "'normal' or 'reduce'", "$END": "the end of the file",
    "DOT": "'.'", "WS": "a space", "COMMENT": "a comment",
}


@functools.cache
def _parser() -> Lark:
    grammar = resources.files("msrdsl.lang").joinpath("space.lark").read_text()
    return Lark(grammar, parser="lalr", start=["space_file", "genotype_file", "value_only", "override"],
                propagate_positions=True, maybe_placeholders=True)


def _token_name(name: str) -> str:
    if name in _TOKEN_NAMES:
        return _TOKEN_NAMES[name]
    # A terminal the table does not know yet still reads as words, never as RBRACE or __ANON_0.
    return "a " + name.strip("_").lower().replace("_", " ")


def _keyword_of(terminal: str) -> str | None:
    """The literal text of a keyword terminal ('OP' -> 'op'), if it is one."""
    try:
        pattern = _parser().get_terminal(terminal).pattern
    except KeyError:
        return None
    if pattern.type == "str":
        return pattern.value
    return None


def _expected(expected: set[str]) -> str:
    names = set()
    for t in expected:
        kw = _keyword_of(t)
        names.add(f"'{kw}'" if kw is not None and t not in _TOKEN_NAMES else _token_name(t))
    if "a number" in names:
        names.discard("a whole number")  # a whole number is a number
    # Kinds of token first ("a name"), then keywords, then punctuation.
    def rank(text: str) -> tuple[int, str]:
        return (0 if not text.startswith("'") else 1 if text[1:2].isalpha() else 2, text)

    ordered = sorted(names, key=rank)
    if len(ordered) > 8:
        ordered = ordered[:7] + ["..."]
    return ", ".join(ordered)


def _syntax_error(err: UnexpectedInput, text: str, path: str, what: str) -> SpaceSyntaxError:
    line, col = getattr(err, "line", 0) or 0, getattr(err, "column", 0) or 0
    if isinstance(err, UnexpectedCharacters):
        ch = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        loc = Location(path, line, col, line, col + 1, text)
        hint = None
        if ch == "'":
            hint = "strings are written in double quotes"
        elif ch == "{" or ch == "}":
            hint = "check the braces of the block above"
        return SpaceSyntaxError(f"unexpected character {_char_words(ch)}", loc, hint)
    if isinstance(err, UnexpectedToken):
        tok = err.token
        if tok.type == "$END":
            return _eof_error(text, path, err.expected, what)
        width = max(len(str(tok)), 1)
        loc = Location(path, tok.line, tok.column, tok.line, tok.column + width, text)
        what = "the end of the file" if tok.type == "$END" else repr(str(tok))
        hint = None
        if tok.type == "RBRACE":
            hint = "a block ended where a value or entry was still expected"
        return SpaceSyntaxError(f"unexpected {what}; expected {_expected(err.expected)}", loc, hint)
    if isinstance(err, UnexpectedEOF):
        return _eof_error(text, path, err.expected, what)
    return SpaceSyntaxError(str(err), Location(path, line, col, line, col + 1, text))


def _char_words(ch: str) -> str:
    if ch == "'":
        return "' (a single quote)"
    if ch.isprintable() and not ch.isspace():
        return f"'{ch}'"
    return f"U+{ord(ch):04X}" if ch else "at the end"


def _eof_error(text: str, path: str, expected: Any, what: str = "the file") -> SpaceSyntaxError:
    # Lark counts lines by '\n' only; so does this (splitlines would also split at '\f', '\r', ...).
    lines = text.rstrip().split("\n")
    last = len(lines)
    col = max(len(lines[-1]), 1)
    loc = Location(path, last, col, last, col + 1, text)
    hint = "a '{' is not closed" if "RBRACE" in set(expected or ()) else None
    return SpaceSyntaxError(f"{what} ends early; expected {_expected(set(expected or ()))}",
                            loc, hint)


def parse_tree(text: str, path: str, start: str) -> Tree:
    """Parse `text` from the grammar rule `start`, raising our located error on failure."""
    try:
        return _parser().parse(text, start=start)
    except UnexpectedInput as err:
        raise _syntax_error(err, text, path, "the file" if start.endswith("_file") else "the value"
                            ) from None


# ---------------------------------------------------------------------------------------------
# Tree -> syntax objects


def _span(meta: Any, path: str, text: str) -> Location | None:
    if getattr(meta, "empty", True):
        return None
    return Location(path, meta.line, meta.column, meta.end_line, meta.end_column, text)


def _tok_loc(tok: Token, path: str, text: str) -> Location:
    return Location(path, tok.line, tok.column, tok.end_line or tok.line,
                    tok.end_column or tok.column + len(tok), text)


class _Builder(Transformer):
    """One method per grammar alternative; each returns located syntax or IR."""

    def __init__(self, path: str, text: str):
        super().__init__()
        self.path, self.text = path, text

    def _loc(self, meta: Any) -> Location | None:
        return _span(meta, self.path, self.text)

    # values ------------------------------------------------------------------------------
    def int(self, items):  # noqa: A003 - named after the grammar alternative
        return int(items[0])

    def float(self, items):  # noqa: A003
        value = float(items[0])
        if not math.isfinite(value):
            raise SpaceSyntaxError(f"the number {items[0]} is too large", _tok_loc(items[0], self.path, self.text),
                                   "numbers must stay below about 1.8e308")
        return value

    def fraction(self, items):
        num, den = int(items[0]), int(items[1])
        if den == 0:
            tok = items[1]
            raise SpaceSyntaxError("division by zero in a fraction", _tok_loc(tok, self.path, self.text))
        return Fraction(num, den)

    def string(self, items):
        return _unescape(items[0], self.path, self.text)

    def true(self, _):
        return True

    def false(self, _):
        return False

    @v_args(meta=True)
    def name(self, meta, items):
        return Name(str(items[0]), loc=self._loc(meta))

    @v_args(meta=True)
    def negate(self, meta, items):
        inner = items[0]
        if isinstance(inner, (int, float, Fraction)) and not isinstance(inner, bool):
            return -inner
        return Negate(inner, loc=self._loc(meta))

    def list(self, items):  # noqa: A003
        return tuple(i for i in items if i is not None)

    def tuple(self, items):  # noqa: A003
        return tuple(i for i in items if i is not None)

    @v_args(meta=True)
    def kwarg(self, meta, items):
        return _Kwarg(str(items[0]), items[1])

    @v_args(meta=True)
    def call_value(self, meta, items):
        return self._call(str(items[0]), items[1:], self._loc(meta))

    def _call(self, name: str, raw_args: list, loc: Location | None) -> Call:
        args, kwargs = [], []
        for a in raw_args:
            if a is None:
                continue
            if isinstance(a, _Kwarg):
                kwargs.append((a.key, a.value))
            elif kwargs:
                raise SpaceSyntaxError(f"positional argument after a keyword argument in '{name}(...)'",
                                       loc)
            else:
                args.append(a)
        return Call(name, tuple(args), tuple(kwargs), loc=loc)

    # operators ---------------------------------------------------------------------------
    @v_args(meta=True)
    def bare_call(self, meta, items):
        return Call(str(items[0]), loc=self._loc(meta))

    @v_args(meta=True)
    def arg_call(self, meta, items):
        return self._call(str(items[0]), items[1:], self._loc(meta))

    def params(self, items):
        return tuple(str(i) for i in items if i is not None)

    @v_args(meta=True)
    def pipeline(self, meta, items):
        return OpVariant(tuple(items), loc=self._loc(meta))

    @v_args(meta=True)
    def stride_variant(self, meta, items):
        stride, pipeline = int(items[0]), items[1]
        return OpVariant(pipeline.steps, stride, loc=self._loc(meta))

    @v_args(meta=True)
    def op_simple(self, meta, items):
        name, params, pipeline = _split_op(items)
        return OpDef(name, params, (pipeline[0],), loc=self._loc(meta))

    @v_args(meta=True)
    def op_strided(self, meta, items):
        name, params, variants = _split_op(items)
        return OpDef(name, params, tuple(variants), loc=self._loc(meta))

    # entries -----------------------------------------------------------------------------
    @v_args(meta=True)
    def block(self, meta, items):
        return tuple(items)

    @v_args(meta=True)
    def entry_value(self, meta, items):
        return self._entry(meta, items[0], items[1], None)

    @v_args(meta=True)
    def entry_value_block(self, meta, items):
        return self._entry(meta, items[0], items[1], items[2])

    @v_args(meta=True)
    def entry_block(self, meta, items):
        return self._entry(meta, items[0], None, items[1])

    def _entry(self, meta, key: Token, value: Any, block: tuple | None) -> Entry:
        key_loc = _tok_loc(key, self.path, self.text)
        value_loc = None
        if value is not None:
            value_loc = self._value_span(meta, key, block)
        return Entry(str(key), value, block, loc=self._loc(meta), key_loc=key_loc,
                     value_loc=value_loc)

    def _value_span(self, meta, key: Token, block: tuple | None) -> Location | None:
        # The value runs from after the key to the block's '{' (or the entry's end).
        start = key.end_pos
        end = _first_brace(self.text, start, meta.end_pos) if block is not None else meta.end_pos
        segment = self.text[start:end]
        lead = len(segment) - len(segment.lstrip())
        trail = len(segment.rstrip())
        return _offsets_to_loc(self.text, self.path, start + lead, start + trail)

    @v_args(meta=True)
    def rule_def(self, meta, items):
        return RuleDecl(str(items[0]), items[1], loc=self._loc(meta))

    @v_args(meta=True)
    def space_def(self, meta, items):
        name, extends, entries = items
        ext = None if extends is None else self.string([extends])
        ext_loc = None if extends is None else _tok_loc(extends, self.path, self.text)
        return SpaceDecl(str(name), ext, entries, loc=self._loc(meta), extends_loc=ext_loc)

    def space_file(self, items):
        return list(items)

    # genotypes ---------------------------------------------------------------------------
    @v_args(meta=True)
    def node_edge(self, meta, items):
        return Edge(str(items[0]), int(items[1]), loc=self._loc(meta))

    @v_args(meta=True)
    def node_line(self, meta, items):
        return (int(items[0]), Node(tuple(items[1:]), loc=self._loc(meta)),
                _tok_loc(items[0], self.path, self.text))

    @v_args(meta=True)
    def cell_genotype(self, meta, items):
        cell_type, *nodes, concat = items
        return _Cell(str(cell_type), nodes, concat[0], concat[1], self._loc(meta))

    @v_args(meta=True)
    def genotype_concat(self, meta, items):
        return (items[0], _span(meta, self.path, self.text))

    def genotype_source(self, items):
        return self.string(items)

    @v_args(meta=True)
    def genotype(self, meta, items):
        name = str(items[0])
        source = next((i for i in items[1:] if isinstance(i, str)), None)
        cells = [i for i in items[1:] if isinstance(i, _Cell)]
        return _build_genotype(name, source, cells, self._loc(meta))

    def genotype_file(self, items):
        return list(items)

    def value_only(self, items):
        return items[0]

    @v_args(meta=True)
    def override(self, meta, items):
        *keys, value = items
        key_locs = tuple(_tok_loc(k, self.path, self.text) for k in keys)
        start = self.text.index("=", keys[-1].end_pos) + 1
        lead = len(self.text[start:]) - len(self.text[start:].lstrip())
        value_loc = _offsets_to_loc(self.text, self.path, start + lead, len(self.text.rstrip()))
        return tuple(str(k) for k in keys), value, key_locs, value_loc


@frozen
class _Cell:
    """A cell of a genotype as written, before its nodes are checked."""

    kind: str
    nodes: list  # (number, Node, location of the number)
    concat: Any
    concat_loc: Location | None
    loc: Location | None


@frozen
class _Kwarg:
    key: str
    value: Any


_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "n": "\n", "t": "\t", "r": "\r", "b": "\b",
            "f": "\f"}


def _unescape(tok: Token, path: str, text: str) -> str:
    """The value of a STRING token: JSON's escapes plus \\UXXXXXXXX; anything else is a located
    error rather than a silent guess (a Windows path's \\d, say)."""
    raw = str(tok)[1:-1]
    if "\\" not in raw:
        return raw
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        code = raw[i + 1]  # the grammar guarantees a character after every backslash
        width = {"u": 4, "U": 8}.get(code)
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            i += 2
            continue
        digits = raw[i + 2:i + 2 + width] if width else ""
        if width and len(digits) == width and all(c in "0123456789abcdefABCDEF" for c in digits):
            point = int(digits, 16)
            end = i + 2 + width
            # A surrogate pair written as two \\u escapes (as JSON does) is one character.
            if 0xD800 <= point < 0xDC00 and raw[end:end + 2] == "\\u":
                low = raw[end + 2:end + 6]
                if len(low) == 4 and all(c in "0123456789abcdefABCDEF" for c in low) \
                        and 0xDC00 <= int(low, 16) < 0xE000:
                    point = 0x10000 + ((point - 0xD800) << 10) + (int(low, 16) - 0xDC00)
                    end += 6
            if point <= 0x10FFFF and not 0xD800 <= point < 0xE000:
                out.append(chr(point))
                i = end
                continue
            what = f"\\{code}{digits} is not a character"
        else:
            what = f"unknown escape \\{code}" if not width else f"\\{code} needs {width} hex digits"
        start = tok.start_pos + 1 + i
        loc = _offsets_to_loc(text, path, start, start + 2 + len(digits)) if text else None
        raise SpaceSyntaxError(f"{what} in a string", loc,
                               'escapes are \\" \\\\ \\n \\t \\r \\uXXXX; write a backslash as \\\\')
    return "".join(out)


def _split_op(items: list) -> tuple[str, tuple[str, ...], list]:
    name = str(items[0])
    if len(items) > 1 and isinstance(items[1], tuple):
        return name, items[1], items[2:]
    rest = [i for i in items[1:] if i is not None]
    return name, (), rest


def _first_brace(text: str, start: int, end: int) -> int:
    """Position of the block's '{' after a head value (skipping strings, which may hold braces)."""
    in_string = False
    for i in range(start, end):
        ch = text[i]
        if ch == '"' and (i == 0 or text[i - 1] != "\\"):
            in_string = not in_string
        elif ch == "{" and not in_string:
            return i
    return end


def _offsets_to_loc(text: str, path: str, start: int, end: int) -> Location:
    line = text.count("\n", 0, start) + 1
    col = start - (text.rfind("\n", 0, start) + 1) + 1
    end_line = text.count("\n", 0, end) + 1
    end_col = end - (text.rfind("\n", 0, end) + 1) + 1
    return Location(path, line, col, end_line, end_col, text)


def _build_genotype(name: str, source: str | None, cells: list[_Cell],
                    loc: Location | None) -> Genotype:
    by_type: dict[str, CellGenotype] = {}
    for cell in cells:
        if cell.kind in by_type:
            raise GenotypeError(f"the {cell.kind} cell is given twice", cell.loc,
                                "a genotype has one normal and one reduce cell")
        if not cell.nodes:
            raise GenotypeError(f"the {cell.kind} cell has no nodes", cell.loc,
                                "add `node 2 = OP(0) + OP(1)` lines")
        first, _, first_loc = cell.nodes[0]
        if first < 1:
            raise GenotypeError(f"the first node of the {cell.kind} cell is node {first}, which "
                                "leaves the cell no inputs", first_loc,
                                "intermediate nodes are numbered after the cell's inputs: in "
                                "DARTS, 0 and 1 are the inputs and the first node is node 2")
        for position, (number, _, number_loc) in enumerate(cell.nodes):
            if number != first + position:
                raise GenotypeError(f"expected node {first + position} here, found node {number}",
                                    number_loc, "nodes are numbered in order from the first one")
        _check_edges(cell.nodes)
        concat = cell.concat
        where = cell.concat_loc or cell.loc
        if not isinstance(concat, tuple) or not all(isinstance(c, int) and not isinstance(c, bool)
                                                    for c in concat):
            raise GenotypeError("concat must be a list of node numbers, like [2, 3, 4, 5]", where)
        last = first + len(cell.nodes) - 1
        if not concat or len(set(concat)) != len(concat) or not all(0 <= c <= last for c in concat):
            raise GenotypeError(f"concat must list distinct nodes between 0 and {last}, "
                                f"got {list(concat)}", where)
        by_type[cell.kind] = CellGenotype(tuple(n for _, n, _ in cell.nodes), tuple(concat),
                                          inputs=first, loc=cell.loc)
    for needed in ("normal", "reduce"):
        if needed not in by_type:
            raise GenotypeError(f"genotype '{name}' has no {needed} cell", loc,
                                f"add `{needed} {{ node ... concat [...] }}`")
    return Genotype(name, by_type["normal"], by_type["reduce"], source, loc=loc)


def _check_edges(nodes: list) -> None:
    for number, node, _ in nodes:
        seen: set[tuple[str, int]] = set()
        for edge in node.edges:
            if not 0 <= edge.input < number:
                raise GenotypeError(
                    f"node {number} takes input from node {edge.input}, which is not earlier",
                    edge.loc, f"inputs of node {number} are nodes 0 to {number - 1}")
            if (edge.op, edge.input) in seen:
                raise GenotypeError(f"node {number} takes {edge.op}({edge.input}) twice", edge.loc,
                                    "each edge of a node is listed once")
            seen.add((edge.op, edge.input))


def _transform(tree: Tree, path: str, text: str) -> Any:
    try:
        return _Builder(path, text).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, MsrdslError):
            raise err.orig_exc from None
        raise


# ---------------------------------------------------------------------------------------------
# Comments


def comments_of(text: str) -> list[tuple[int, int, str]]:
    """(line, column, text) of every comment, found with the grammar's own lexer so that a '#'
    inside a string is not taken for one."""
    out = []
    parser = _parser()
    try:
        for tok in parser.lex(text, dont_ignore=True):
            if tok.type == "COMMENT":
                out.append((tok.line, tok.column, str(tok).rstrip()))
    except UnexpectedInput:
        pass  # the parse reports it
    return out


class _Slot:
    """Where the comments of one printed line (or block) go while they are being attached."""

    def __init__(self) -> None:
        self.leading: list[str] = []
        self.trailing: str | None = None
        self.end: list[str] = []
        self.close: str | None = None


def _attach_comments(items: list, text: str) -> tuple[list, list[OpComments], tuple[str, ...]]:
    """Give each declaration, entry and `stride N:` line its comments.

    A comment on the same line as something printed on its own line (an entry, a header, a
    closing brace) trails the rightmost such thing before it; a comment on a line of its own leads
    the next entry of the innermost block around it, or ends that block when nothing follows.
    """
    comments = comments_of(text)
    slots: dict[int, _Slot] = {}
    # (line, col, id) of what starts a printed line; (line, col, id) of closing braces;
    # containers as (start, close, id, child ids)
    starts: list[tuple[int, int, int]] = []
    closers: list[tuple[int, int, int]] = []
    containers: list[tuple[tuple[int, int], tuple[int, int], int, list[tuple[int, int, int]]]] = []
    top: list[tuple[int, int, int]] = []

    def start_of(loc: Location) -> tuple[int, int]:
        return (loc.line, loc.col)

    def close_of(loc: Location) -> tuple[int, int]:
        return (loc.end_line, loc.end_col - 1)

    def register(obj: Any, children: Sequence[Any] | None) -> tuple[int, int, int]:
        slots[id(obj)] = _Slot()
        anchor = (*start_of(obj.loc), id(obj))
        starts.append(anchor)
        if children is not None:
            kids = [register(c, c.block if isinstance(c, Entry) else None) for c in children]
            closers.append((*close_of(obj.loc), id(obj)))
            containers.append((start_of(obj.loc), close_of(obj.loc), id(obj), kids))
        return anchor

    for item in items:
        if isinstance(item, (RuleDecl, SpaceDecl)):
            top.append(register(item, item.entries))
        elif len(item.variants) == 1 and item.variants[0].stride is None:
            top.append(register(item, None))
        else:
            top.append(register(item, item.variants))

    tail: list[str] = []
    for line, col, body in comments:
        here = [(c, i, "trailing") for ln, c, i in starts if ln == line and c < col]
        here += [(c, i, "close") for ln, c, i in closers if ln == line and c < col]
        if here:
            _, target, kind = max(here, key=lambda h: h[0])
            setattr(slots[target], kind, body)
            continue
        inside = [c for c in containers if c[0] < (line, col) < c[1]]
        if inside:
            _, _, owner, kids = max(inside, key=lambda c: c[0])
            after = [k for k in kids if (k[0], k[1]) > (line, col)]
            if after:
                slots[after[0][2]].leading.append(body)
            else:
                slots[owner].end.append(body)
            continue
        after = [k for k in top if (k[0], k[1]) > (line, col)]
        if after:
            slots[after[0][2]].leading.append(body)
        else:
            tail.append(body)

    def notes(obj: Any) -> dict[str, Any]:
        slot = slots[id(obj)]
        return {"comments": tuple(slot.leading), "trailing": slot.trailing,
                "end_comments": tuple(slot.end), "close_trailing": slot.close}

    def annotate(entries: tuple[Entry, ...]) -> tuple[Entry, ...]:
        return tuple(attrs.evolve(e, block=annotate(e.block) if e.block is not None else None,
                                  **notes(e)) for e in entries)

    result, op_comments = [], []
    for item in items:
        if isinstance(item, (RuleDecl, SpaceDecl)):
            item = attrs.evolve(item, entries=annotate(item.entries), **notes(item))
        else:
            n = notes(item)
            variants = tuple((tuple(slots[id(v)].leading), slots[id(v)].trailing)
                             for v in item.variants) if id(item.variants[0]) in slots else ()
            op_comments.append(OpComments(n["comments"], n["trailing"], variants,
                                          n["end_comments"], n["close_trailing"]))
        result.append(item)
    return result, op_comments, tuple(tail)


# ---------------------------------------------------------------------------------------------
# Entry points


def parse_space_syntax(text: str, path: str = "<space>") -> SpaceFile:
    """Parse the text of a .space file into its declarations (no meaning given yet)."""
    items = _transform(parse_tree(text, path, "space_file"), path, text)
    items, op_comments, tail = _attach_comments(items, text)
    return SpaceFile(
        path,
        tuple(i for i in items if isinstance(i, OpDef)),
        tuple(i for i in items if isinstance(i, RuleDecl)),
        tuple(i for i in items if isinstance(i, SpaceDecl)),
        tuple(op_comments),
        tail,
    )


def parse_genotypes(text: str, path: str = "<genotype>") -> list[Genotype]:
    """Parse the text of a .genotype file (one or more genotypes)."""
    return _transform(parse_tree(text, path, "genotype_file"), path, text)


def parse_value(text: str, path: str = "<value>") -> Any:
    """Parse one value, as written after a key (used by `--set path=value`)."""
    return _transform(parse_tree(text, path, "value_only"), path, text)


def parse_override_syntax(text: str, path: str = "--set") -> tuple[tuple[str, ...], Any,
                                                                   tuple[Location, ...], Location]:
    """`search.epochs=5` -> (keys, value, location of each key, location of the value)."""
    return _transform(parse_tree(text, path, "override"), path, text)


def header_comments(text: str) -> tuple[str, ...]:
    """The comment lines at the very top of a file (a genotype's or space's header)."""
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            out.append(stripped)
        elif stripped:
            break
    return tuple(out)
