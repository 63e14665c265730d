"""Text -> syntax tree: the Lark parser, located syntax errors, and the tree of entries.

A space's body stays a tree of generic `Entry`s here; `interpret` gives it meaning through the
schema in msrdsl/ir.py. Operator definitions and genotypes have their own syntax and become IR
directly. Comments are kept, attached to the entry they precede or end, so `msrdsl fmt --write`
never deletes what a user wrote.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from importlib import resources
from typing import Any

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
    comments: tuple[str, ...] = field(default=(), eq=False)
    trailing: str | None = field(default=None, eq=False)


@frozen
class RuleDecl:
    name: str
    entries: tuple[Entry, ...]
    loc: Location | None = field(default=None, eq=False)
    comments: tuple[str, ...] = field(default=(), eq=False)


@frozen
class SpaceDecl:
    name: str
    extends: str | None
    entries: tuple[Entry, ...]
    loc: Location | None = field(default=None, eq=False)
    extends_loc: Location | None = field(default=None, eq=False)
    comments: tuple[str, ...] = field(default=(), eq=False)


@frozen
class SpaceFile:
    """Everything one .space file declares, in source order."""

    path: str
    ops: tuple[OpDef, ...]
    rules: tuple[RuleDecl, ...]
    spaces: tuple[SpaceDecl, ...]
    op_comments: tuple[tuple[str, ...], ...] = field(default=(), eq=False)
    tail_comments: tuple[str, ...] = field(default=(), eq=False)


# ---------------------------------------------------------------------------------------------
# The parser

# What the user sees instead of Lark's terminal names.
_TOKEN_NAMES = {
    "NAME": "a name", "INT": "a whole number", "FLOAT": "a number", "STRING": "a quoted string",
    "LBRACE": "'{'", "RBRACE": "'}'", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'",
    "COMMA": "','", "EQUAL": "'='", "COLON": "':'", "VBAR": "'|'", "MINUS": "'-'", "SLASH": "'/'",
    "PLUS": "'+'", "CELL_TYPE": "'normal' or 'reduce'", "$END": "the end of the file",
}


@functools.cache
def _parser() -> Lark:
    grammar = resources.files("msrdsl.lang").joinpath("space.lark").read_text()
    return Lark(grammar, parser="lalr", start=["space_file", "genotype_file", "value_only"],
                propagate_positions=True, maybe_placeholders=True)


def _token_name(name: str) -> str:
    if name in _TOKEN_NAMES:
        return _TOKEN_NAMES[name]
    if name.startswith("__ANON") or name.isupper():
        return name.lower()
    return f"'{name.lower()}'"


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
    ordered = sorted(names)
    if len(ordered) > 6:
        ordered = ordered[:6] + ["..."]
    return ", ".join(ordered)


def _syntax_error(err: UnexpectedInput, text: str, path: str) -> SpaceSyntaxError:
    line, col = getattr(err, "line", 0) or 0, getattr(err, "column", 0) or 0
    if isinstance(err, UnexpectedCharacters):
        ch = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        loc = Location(path, line, col, line, col + 1, text)
        hint = None
        if ch == "'":
            hint = "strings are written in double quotes"
        elif ch == "{" or ch == "}":
            hint = "check the braces of the block above"
        return SpaceSyntaxError(f"unexpected character {ch!r}", loc, hint)
    if isinstance(err, UnexpectedToken):
        tok = err.token
        if tok.type == "$END":
            return _eof_error(text, path, err.expected)
        width = max(len(str(tok)), 1)
        loc = Location(path, tok.line, tok.column, tok.line, tok.column + width, text)
        what = "the end of the file" if tok.type == "$END" else repr(str(tok))
        hint = None
        if tok.type == "RBRACE":
            hint = "a block ended where a value or entry was still expected"
        return SpaceSyntaxError(f"unexpected {what}; expected {_expected(err.expected)}", loc, hint)
    if isinstance(err, UnexpectedEOF):
        return _eof_error(text, path, err.expected)
    return SpaceSyntaxError(str(err), Location(path, line, col, line, col + 1, text))


def _eof_error(text: str, path: str, expected: Any) -> SpaceSyntaxError:
    lines = text.splitlines() or [""]
    last = len(lines)
    col = len(lines[-1]) + 1
    loc = Location(path, last, max(col - 1, 1), last, col, text)
    hint = "a '{' is not closed" if "RBRACE" in set(expected or ()) else None
    return SpaceSyntaxError(f"the file ends early; expected {_expected(set(expected or ()))}",
                            loc, hint)


def parse_tree(text: str, path: str, start: str) -> Tree:
    """Parse `text` from the grammar rule `start`, raising our located error on failure."""
    try:
        return _parser().parse(text, start=start)
    except UnexpectedInput as err:
        raise _syntax_error(err, text, path) from None


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
        return float(items[0])

    def fraction(self, items):
        num, den = int(items[0]), int(items[1])
        if den == 0:
            tok = items[1]
            raise SpaceSyntaxError("division by zero in a fraction", _tok_loc(tok, self.path, self.text))
        return Fraction(num, den)

    def string(self, items):
        raw = str(items[0])[1:-1]
        return raw.encode("utf-8").decode("unicode_escape") if "\\" in raw else raw

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
        return (str(cell_type), nodes, concat, self._loc(meta))

    def genotype_source(self, items):
        return self.string(items)

    @v_args(meta=True)
    def genotype(self, meta, items):
        name = str(items[0])
        source = items[1] if isinstance(items[1], str) else None
        cells = [i for i in items[1:] if isinstance(i, tuple)]
        return _build_genotype(name, source, cells, self._loc(meta), self.path, self.text)

    def genotype_file(self, items):
        return list(items)

    def value_only(self, items):
        return items[0]


@frozen
class _Kwarg:
    key: str
    value: Any


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


def _build_genotype(name: str, source: str | None, cells: list, loc: Location | None,
                    path: str, text: str) -> Genotype:
    by_type: dict[str, CellGenotype] = {}
    for cell_type, nodes, concat, cell_loc in cells:
        _check_edges(nodes)
        if cell_type in by_type:
            raise GenotypeError(f"the {cell_type} cell is given twice", cell_loc)
        if not nodes:
            raise GenotypeError(f"the {cell_type} cell has no nodes", cell_loc)
        first = nodes[0][0]
        for position, (number, _, number_loc) in enumerate(nodes):
            if number != first + position:
                raise GenotypeError(f"expected node {first + position} here, found node {number}",
                                    number_loc, "nodes are numbered in order from the first one")
        if not isinstance(concat, tuple) or not all(isinstance(c, int) and not isinstance(c, bool)
                                                    for c in concat):
            raise GenotypeError("concat must be a list of node numbers, like [2, 3, 4, 5]", cell_loc)
        last = first + len(nodes) - 1
        if not concat or len(set(concat)) != len(concat) or not all(0 <= c <= last for c in concat):
            raise GenotypeError(f"concat must list distinct nodes between 0 and {last}, "
                                f"got {list(concat)}", cell_loc)
        by_type[cell_type] = CellGenotype(tuple(n for _, n, _ in nodes), tuple(concat), inputs=first,
                                          loc=cell_loc)
    for needed in ("normal", "reduce"):
        if needed not in by_type:
            raise GenotypeError(f"genotype '{name}' has no {needed} cell", loc)
    return Genotype(name, by_type["normal"], by_type["reduce"], source, loc=loc)


def _check_edges(nodes: list) -> None:
    for number, node, _ in nodes:
        for edge in node.edges:
            if not 0 <= edge.input < number:
                raise GenotypeError(
                    f"node {number} takes input from node {edge.input}, which is not earlier",
                    edge.loc, f"inputs of node {number} are nodes 0 to {number - 1}")
        sources = [e.input for e in node.edges]
        if len(set(zip(sources, (e.op for e in node.edges)))) != len(sources):
            raise GenotypeError(f"node {number} lists the same edge twice", node.loc)


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


def _attach_comments(items: list, text: str) -> tuple[list, list[tuple[str, ...]], tuple[str, ...]]:
    """Give each decl and entry its leading comments and trailing comment."""
    comments = comments_of(text)
    if not comments:
        return items, [() for i in items if isinstance(i, OpDef)], ()
    anchors: list[tuple[int, int]] = []

    def collect(entries):
        for e in entries:
            anchors.append((e.loc.line, e.loc.col))
            if e.block:
                collect(e.block)

    for item in items:
        anchors.append((item.loc.line, item.loc.col))
        if isinstance(item, (RuleDecl, SpaceDecl)):
            collect(item.entries)
    anchors.sort()
    leading: dict[tuple[int, int], list[str]] = {}
    trailing: dict[tuple[int, int], str] = {}
    tail: list[str] = []
    for line, col, body in comments:
        same_line = [a for a in anchors if a[0] == line and a[1] < col]
        if same_line:
            trailing[same_line[-1]] = body
            continue
        after = [a for a in anchors if a[0] > line]
        if after:
            leading.setdefault(after[0], []).append(body)
        else:
            tail.append(body)

    def key(loc: Location) -> tuple[int, int]:
        return (loc.line, loc.col)

    def annotate(entries):
        out = []
        for e in entries:
            block = annotate(e.block) if e.block is not None else None
            out.append(Entry(e.key, e.value, block, loc=e.loc, key_loc=e.key_loc,
                             value_loc=e.value_loc, comments=tuple(leading.get(key(e.loc), ())),
                             trailing=trailing.get(key(e.loc))))
        return tuple(out)

    result, op_comments = [], []
    for item in items:
        lead = tuple(leading.get(key(item.loc), ()))
        if isinstance(item, RuleDecl):
            item = RuleDecl(item.name, annotate(item.entries), loc=item.loc, comments=lead)
        elif isinstance(item, SpaceDecl):
            item = SpaceDecl(item.name, item.extends, annotate(item.entries), loc=item.loc,
                             extends_loc=item.extends_loc, comments=lead)
        else:
            op_comments.append(lead)
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
