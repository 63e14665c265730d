"""Genotype interchange: DARTS namedtuple notation, JSON, and loading by name or path.

DARTS notation is read as data by a small tokenizer and a recursive-descent parser; nothing in
the text is ever evaluated, so `__import__('os')` is just a malformed genotype. Two edge forms
are understood:

- DARTS' pairs `(op, input)`, two per intermediate node, nodes numbered `inputs`, `inputs+1`, ...
  in list order (Liu et al., quark0/darts `cnn/genotypes.py`);
- FairDARTS' triples `(op, target, input)` (Chu et al., xiaomi-automl/FairDARTS
  `fairdarts/genotypes.py`: `('sep_conv_3x3', 2, 0)` is an edge into node 2 from node 0, as
  its `DCOCell` reads it), any number of edges per node.

Every check that decides whether a genotype is valid lives in `_problems`, once; each reader
only decides where a problem is located (a token of the DARTS text, a JSON path, an IR node).
"""

from __future__ import annotations

import json
import keyword
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from attrs import evolve, frozen

from msrdsl.errors import GenotypeError, Location, did_you_mean
from msrdsl.genotype import CellGenotype, Edge, Genotype, Node

__all__ = [
    "from_darts",
    "read_darts_genotypes",
    "to_darts",
    "to_json",
    "from_json",
    "load_genotype",
    "validate_genotype",
    "genotype_names",
    "genotypes_dir",
]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CELLS = ("normal", "reduce")
_DARTS_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")

# A problem's address: ("normal", "node", 0, "edge", 1, "input"), ("reduce", "concat", 2), ("name",).
Where = tuple[Any, ...]


# ---------------------------------------------------------------------------------------------
# Validation: one list of checks, located by whoever asks


@frozen
class _Problem:
    message: str
    where: Where
    hint: str | None = None


def _problems(g: Genotype, known_ops: Iterable[str] | None) -> Iterator[_Problem]:
    known = None if known_ops is None else frozenset(known_ops)
    if not isinstance(g.name, str) or not _IDENT.fullmatch(g.name):
        yield _Problem(f"genotype name {g.name!r} is not an identifier", ("name",),
                       "use letters, digits and '_', not starting with a digit")
    for cell_name in _CELLS:
        yield from _cell_problems(cell_name, getattr(g, cell_name), known)
    if g.normal.inputs != g.reduce.inputs:
        yield _Problem(f"the normal cell takes {g.normal.inputs} inputs but the reduction cell "
                       f"takes {g.reduce.inputs}", ("reduce",),
                       "every cell of a network reads the same number of previous cells")


def _cell_problems(cell_name: str, cell: CellGenotype, known: frozenset[str] | None
                   ) -> Iterator[_Problem]:
    here = (cell_name,)
    if cell.inputs < 1:
        yield _Problem(f"the {cell_name} cell has {cell.inputs} input nodes", here,
                       "a cell reads at least one previous cell")
        return
    if not cell.nodes:
        yield _Problem(f"the {cell_name} cell has no intermediate nodes", here)
    for pos, node in enumerate(cell.nodes):
        j = cell.node_index(pos)
        if not node.edges:
            yield _Problem(f"{cell_name} cell, node {j}: no edges", (*here, "node", pos),
                           "every intermediate node sums at least one edge")
        for k, edge in enumerate(node.edges):
            at = (*here, "node", pos, "edge", k)
            yield from _op_problems(cell_name, j, edge.op, (*at, "op"), known)
            yield from _input_problems(cell_name, j, edge.input, (*at, "input"))
    yield from _concat_problems(cell_name, cell)


def _op_problems(cell_name: str, j: int, op: str, where: Where, known: frozenset[str] | None
                 ) -> Iterator[_Problem]:
    if not _IDENT.fullmatch(op):
        # The text format writes `op(input)`, so an operator must be an identifier.
        yield _Problem(f"{cell_name} cell, node {j}: operator name {op!r} is not an identifier",
                       where)
    elif known is not None and op not in known:
        yield _Problem(f"{cell_name} cell, node {j}: unknown operator '{op}'", where,
                       did_you_mean(op, known))


def _input_problems(cell_name: str, j: int, i: int, where: Where) -> Iterator[_Problem]:
    hint = f"node {j} can take input from nodes 0..{j - 1}"
    if i == j:
        yield _Problem(f"{cell_name} cell, node {j}: takes input from itself", where, hint)
    elif i > j:
        yield _Problem(f"{cell_name} cell, node {j}: input {i} is a later node", where, hint)
    elif i < 0:
        yield _Problem(f"{cell_name} cell, node {j}: input {i} is not a node", where, hint)


def _concat_problems(cell_name: str, cell: CellGenotype) -> Iterator[_Problem]:
    last = cell.inputs + len(cell.nodes) - 1
    if not cell.concat:
        yield _Problem(f"the {cell_name} cell concatenates no nodes", (cell_name, "concat"),
                       f"list nodes {cell.inputs}..{last}")
    seen: set[int] = set()
    for m, n in enumerate(cell.concat):
        where = (cell_name, "concat", m)
        if not 0 <= n <= last:
            yield _Problem(f"{cell_name} cell: concat names node {n}, but the cell's nodes "
                           f"are 0..{last}", where)
        elif n in seen:
            yield _Problem(f"{cell_name} cell: concat names node {n} twice", where)
        seen.add(n)


def validate_genotype(g: Genotype, known_ops: Iterable[str] | None = None) -> Genotype:
    """Raise GenotypeError at the first problem (located where the IR says it was written)."""
    for problem in _problems(g, known_ops):
        raise GenotypeError(problem.message, _ir_loc(g, problem.where), problem.hint)
    return g


def _ir_loc(g: Genotype, where: Where) -> Location | None:
    """The location of the innermost IR node on the problem's path that carries one."""
    best = g.loc
    obj: Any = g
    for step in where:
        if isinstance(step, int):
            try:
                obj = obj[step]
            except (IndexError, TypeError):
                break
        else:
            obj = getattr(obj, {"node": "nodes", "edge": "edges"}.get(step, step), None)
        loc = getattr(obj, "loc", None)
        if loc is not None:
            best = loc
    return best


# ---------------------------------------------------------------------------------------------
# DARTS notation: tokens


@frozen
class _Token:
    kind: str  # name, int, number, str, punct, end
    text: str
    line: int
    col: int
    end_line: int
    end_col: int
    first_on_line: bool = False

    @property
    def value(self) -> Any:
        if self.kind == "int":
            return int(self.text)
        if self.kind == "str":
            return _unquote(self.text)
        return self.text


_TOKEN_RE = re.compile(r"""
    (?P<ws>[ \t\f\r]+|\\\r?\n)
  | (?P<nl>\n)
  | (?P<comment>\#[^\n]*)
  | (?P<str>'''|\"\"\"|'|")
  | (?P<number>\d[\d_]*(?P<frac>\.\d*)?(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>.)
""", re.VERBOSE | re.DOTALL)


def _tokenize(text: str, path: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos, line, line_start = 0, 1, 0
    fresh_line = True
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        assert m is not None  # `punct` matches any character
        kind = m.lastgroup
        if kind == "str":
            end = _string_end(text, pos, m.group(), path, line, pos - line_start + 1)
        else:
            end = m.end()
        chunk = text[pos:end]
        col = pos - line_start + 1
        newlines = chunk.count("\n")
        end_line = line + newlines
        end_col = (len(chunk) - chunk.rfind("\n")) if newlines else col + len(chunk)
        if kind == "nl":
            fresh_line = True
        elif kind not in ("ws", "comment"):
            if kind == "number" and m.group("frac") is None and "e" not in chunk.lower():
                kind = "int"
            tokens.append(_Token(kind, chunk, line, col, end_line, end_col, fresh_line))
            fresh_line = False
        if newlines:
            line, line_start = end_line, pos + chunk.rfind("\n") + 1
        pos = end
    tokens.append(_Token("end", "", line, pos - line_start + 1, line, pos - line_start + 1, True))
    return tokens


def _string_end(text: str, start: int, quote: str, path: str, line: int, col: int) -> int:
    pos = start + len(quote)
    while pos < len(text):
        ch = text[pos]
        if ch == "\\":
            pos += 2
            continue
        if text.startswith(quote, pos):
            return pos + len(quote)
        if ch == "\n" and len(quote) == 1:
            break
        pos += 1
    raise GenotypeError("string is never closed", Location(path, line, col, line, col + len(quote),
                                                            text))


def _unquote(text: str) -> str:
    quote = text[:3] if text[:3] in ("'''", '"""') else text[0]
    body = text[len(quote):-len(quote)]
    # Only the escapes a quoted operator name can need; anything else stays as written.
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def _describe(tok: _Token) -> str:
    if tok.kind == "end":
        return "the end of the text"
    return f"'{tok.text}'" if len(tok.text) <= 30 else f"'{tok.text[:27]}...'"


# ---------------------------------------------------------------------------------------------
# DARTS notation: parser


@frozen
class _Parsed:
    """One `Genotype(...)` call, with the location of each part."""

    name: str | None
    genotype: Genotype
    spans: dict[Where, Location]


_CLOSERS = {"(": ")", "[": "]", "{": "}"}


class _Parser:
    def __init__(self, text: str, path: str, inputs: int):
        self.text, self.path, self.inputs = text, path, inputs
        self.tokens = _tokenize(text, path)
        self.pos = 0
        self.spans: dict[Where, Location] = {}

    # -- token plumbing ------------------------------------------------------------------

    @property
    def tok(self) -> _Token:
        return self.tokens[self.pos]

    def advance(self) -> _Token:
        tok = self.tokens[self.pos]
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return tok

    def loc(self, first: _Token, last: _Token | None = None) -> Location:
        last = last or first
        return Location(self.path, first.line, first.col, last.end_line, last.end_col, self.text)

    def error(self, message: str, tok: _Token, hint: str | None = None) -> GenotypeError:
        return GenotypeError(message, self.loc(tok), hint)

    def expect_punct(self, ch: str, what: str) -> _Token:
        if self.tok.kind == "punct" and self.tok.text == ch:
            return self.advance()
        raise self.error(f"expected {what}, found {_describe(self.tok)}", self.tok)

    def close(self, opener: _Token) -> _Token:
        """The bracket closing `opener`, or an error naming where it was opened."""
        want = _CLOSERS[opener.text]
        tok = self.tok
        if tok.kind == "punct" and tok.text == want:
            return self.advance()
        if tok.kind == "end" or (tok.kind == "punct" and tok.text in _CLOSERS.values()):
            if tok.kind == "end":
                raise self.error(f"'{opener.text}' is never closed", opener,
                                 f"add '{want}' to close it")
            raise self.error(f"expected '{want}' to close the '{opener.text}' at line "
                             f"{opener.line}, column {opener.col}, found '{tok.text}'", tok)
        raise self.error(f"expected ',' or '{want}', found {_describe(tok)}", tok)

    def at_punct(self, ch: str) -> bool:
        return self.tok.kind == "punct" and self.tok.text == ch

    def comma_or_close(self, opener: _Token) -> _Token | None:
        """After an item: None if another item may follow, else the closing bracket."""
        if self.at_punct(","):
            self.advance()
            if self.at_punct(_CLOSERS[opener.text]):
                return self.advance()
            return None
        return self.close(opener)

    # -- grammar -------------------------------------------------------------------------

    def statement(self, default_name: str) -> _Parsed:
        """`[NAME =] Genotype(...)`."""
        name, first = None, self.tok
        if (self.tok.kind == "name" and self.tokens[self.pos + 1].kind == "punct"
                and self.tokens[self.pos + 1].text == "="):
            name_tok = self.advance()
            self.advance()
            name = name_tok.text
            self.spans[("name",)] = self.loc(name_tok)
        head = self.tok
        if head.kind != "name" or head.text != "Genotype":
            raise self.error(f"expected a DARTS genotype 'Genotype(normal=..., ...)', found "
                             f"{_describe(head)}", head,
                             "the text is read as data, never run: only Genotype(...) with "
                             "lists of (op, input) edges and range(...) or lists for concat")
        self.advance()
        opener = self.expect_punct("(", "'(' after 'Genotype'")
        values = self.arguments(opener)
        last = self.tokens[self.pos - 1]
        self.spans[()] = self.loc(first, last)
        g = self.build(name or default_name, values, last)
        return _Parsed(name, evolve(g, loc=self.spans[()]), self.spans)

    def arguments(self, opener: _Token) -> dict[str, tuple[Any, _Token]]:
        values: dict[str, tuple[Any, _Token]] = {}
        positional = 0
        if self.at_punct(")"):
            self.advance()
            return values
        while True:
            tok = self.tok
            if (tok.kind == "name" and self.tokens[self.pos + 1].kind == "punct"
                    and self.tokens[self.pos + 1].text == "="):
                if tok.text not in _DARTS_FIELDS:
                    raise self.error(f"unknown Genotype field '{tok.text}'", tok,
                                     did_you_mean(tok.text, _DARTS_FIELDS))
                key = tok.text
                self.advance()
                self.advance()
            else:
                if len(values) > positional:
                    raise self.error("positional argument after keyword arguments", tok)
                if positional >= len(_DARTS_FIELDS):
                    raise self.error("too many arguments: Genotype has 4 fields", tok)
                key = _DARTS_FIELDS[positional]
                positional += 1
            if key in values:
                raise self.error(f"'{key}' is given twice", tok)
            start = self.tok
            value = self.concat(key) if key.endswith("_concat") else self.edges(key)
            values[key] = (value, start)
            if self.comma_or_close(opener) is not None:
                return values

    def edges(self, cell_name: str) -> list[tuple[_Token, ...]]:
        opener = self.tok
        if not self.at_punct("["):
            raise self.error(f"expected a list of (op, input) edges for '{cell_name}', found "
                             f"{_describe(opener)}", opener)
        self.advance()
        items: list[tuple[_Token, ...]] = []
        if self.at_punct("]"):
            closer = self.advance()
        else:
            while True:
                items.append(self.edge(opener))
                closer = self.comma_or_close(opener)
                if closer is not None:
                    break
        self.spans[(cell_name,)] = self.loc(opener, closer)
        return items

    def edge(self, list_opener: _Token) -> tuple[_Token, ...]:
        """`(op, input)` or `(op, target, input)`: returns (opener, op, ints..., closer)."""
        opener = self.tok
        if not (self.at_punct("(") or self.at_punct("[")):
            keyword_next = self.tokens[self.pos + 1].text == "=" and opener.kind == "name"
            hint = (f"is the '[' at line {list_opener.line}, column {list_opener.col} missing "
                    f"its ']'?" if keyword_next else None)
            raise self.error(f"expected an edge like ('sep_conv_3x3', 0), found "
                             f"{_describe(opener)}", opener, hint)
        self.advance()
        op = self.tok
        if op.kind != "str":
            raise self.error(f"expected the operator name as a quoted string, found "
                             f"{_describe(op)}", op)
        self.advance()
        ints: list[_Token] = []
        while True:
            closer = self.comma_or_close(opener)
            if closer is not None:
                break
            num = self.tok
            if num.kind != "int":
                raise self.error(f"expected a node number, found {_describe(num)}", num)
            if len(ints) == 2:
                raise self.error("an edge has at most 3 parts: (op, input) or "
                                 "(op, target, input)", num)
            ints.append(self.advance())
        if not ints:
            raise self.error("an edge needs a node number: (op, input)", closer)
        return (opener, op, *ints, closer)

    def concat(self, key: str) -> list[tuple[int, _Token]]:
        tok = self.tok
        cell_name = key.removesuffix("_concat")
        if tok.kind == "name" and tok.text == "range":
            self.advance()
            opener = self.expect_punct("(", "'(' after 'range'")
            bounds: list[int] = []
            while True:
                num = self.tok
                if num.kind != "int":
                    raise self.error(f"expected an integer in range(...), found "
                                     f"{_describe(num)}", num)
                bounds.append(self.advance().value)
                closer = self.comma_or_close(opener)
                if closer is not None:
                    break
                if len(bounds) == 2:
                    raise self.error("range(start, stop) takes at most two numbers here",
                                     self.tok)
            span = self.loc(tok, closer)
            self.spans[(cell_name, "concat")] = span
            # Each node of a range is located at the whole range call.
            return [(n, tok) for n in range(*bounds)] if bounds else []
        if not self.at_punct("["):
            raise self.error(f"expected range(a, b) or a list of nodes for '{key}', found "
                             f"{_describe(tok)}", tok)
        opener = self.advance()
        out: list[tuple[int, _Token]] = []
        if self.at_punct("]"):
            closer = self.advance()
        else:
            while True:
                num = self.tok
                if num.kind != "int":
                    raise self.error(f"expected a node number in '{key}', found "
                                     f"{_describe(num)}", num)
                self.advance()
                self.spans[(cell_name, "concat", len(out))] = self.loc(num)
                out.append((num.value, num))
                closer = self.comma_or_close(opener)
                if closer is not None:
                    break
        self.spans[(cell_name, "concat")] = self.loc(opener, closer)
        return out

    # -- from tokens to IR ---------------------------------------------------------------

    def build(self, name: str, values: dict[str, tuple[Any, _Token]], closer: _Token) -> Genotype:
        for key in _DARTS_FIELDS:
            if key not in values:
                raise self.error(f"Genotype(...) is missing '{key}='", closer,
                                 "a DARTS genotype gives normal, normal_concat, reduce and "
                                 "reduce_concat")
        edge_lists = {c: values[c][0] for c in _CELLS}
        arity = _edge_arity(edge_lists)
        cells = {}
        for c in _CELLS:
            nodes = (self.pairs_to_nodes(c, edge_lists[c], values[c][1]) if arity == 2
                     else self.triples_to_nodes(c, edge_lists[c], values[c][1]))
            concat = tuple(n for n, _ in values[f"{c}_concat"][0])
            cells[c] = CellGenotype(nodes=nodes, concat=concat, inputs=self.inputs,
                                    loc=self.spans.get((c,)))
        return Genotype(name=name, normal=cells["normal"], reduce=cells["reduce"])

    def mixed_arity_check(self, items: list[tuple[_Token, ...]], arity: int) -> None:
        for item in items:
            if len(item) - 2 != arity:
                raise self.error("this edge mixes forms: use (op, input) pairs or FairDARTS "
                                 "(op, target, input) triples throughout", item[0])

    def pairs_to_nodes(self, c: str, items: list[tuple[_Token, ...]], start: _Token
                       ) -> tuple[Node, ...]:
        self.mixed_arity_check(items, 2)
        if not items:
            raise self.error(f"'{c}' lists no edges", start)
        if len(items) % 2:
            raise self.error(f"'{c}' lists {len(items)} edges: the (op, input) form needs two "
                             f"per node, so the last node has only this one", items[-1][0],
                             "add its second edge, or write FairDARTS (op, target, input) "
                             "triples for nodes with other edge counts")
        nodes = []
        for pos in range(len(items) // 2):
            pair = items[2 * pos:2 * pos + 2]
            nodes.append(self.node(c, pos, pair))
        return tuple(nodes)

    def triples_to_nodes(self, c: str, items: list[tuple[_Token, ...]], start: _Token
                         ) -> tuple[Node, ...]:
        self.mixed_arity_check(items, 3)
        if not items:
            raise self.error(f"'{c}' lists no edges", start)
        by_target: dict[int, list[tuple[_Token, ...]]] = {}
        for item in items:
            target = item[2]
            if target.value < self.inputs:
                raise self.error(f"{c} cell: edge target {target.value} is an input node; "
                                 f"intermediate nodes start at {self.inputs}", target,
                                 "FairDARTS triples are (op, target, input)")
            by_target.setdefault(target.value, []).append(item)
        nodes = []
        for pos, j in enumerate(range(self.inputs, max(by_target) + 1)):
            if j not in by_target:
                later = min(t for t in by_target if t > j)
                raise self.error(f"{c} cell: node {j} has no edges, but node {later} does",
                                 by_target[later][0][2],
                                 "msrdsl cells number their nodes without gaps; FairDARTS' "
                                 "sparse cells that drop a node need renumbering")
            nodes.append(self.node(c, pos, by_target[j]))
        return tuple(nodes)

    def node(self, c: str, pos: int, items: list[tuple[_Token, ...]]) -> Node:
        edges = []
        for k, item in enumerate(items):
            at = (c, "node", pos, "edge", k)
            opener, op, source, closer = item[0], item[1], item[-2], item[-1]
            self.spans[at] = self.loc(opener, closer)
            self.spans[(*at, "op")] = self.loc(op)
            self.spans[(*at, "input")] = self.loc(source)
            edges.append(Edge(op=op.value, input=source.value, loc=self.spans[at]))
        span = self.loc(items[0][0], items[-1][-1])
        self.spans[(c, "node", pos)] = span
        return Node(edges=tuple(edges), loc=span)


def _edge_arity(edge_lists: Mapping[str, list[tuple[_Token, ...]]]) -> int:
    """2 for DARTS pairs, 3 for FairDARTS triples, decided by the first edge written."""
    for c in _CELLS:
        if edge_lists[c]:
            return len(edge_lists[c][0]) - 2
    return 2


def _located(parsed: _Parsed, known_ops: Iterable[str] | None) -> Genotype:
    for problem in _problems(parsed.genotype, known_ops):
        where = problem.where
        # The most precise span recorded on the problem's path.
        while where not in parsed.spans and where:
            where = where[:-1]
        raise GenotypeError(problem.message, parsed.spans.get(where), problem.hint)
    return parsed.genotype


def from_darts(text: str, path: str = "<darts>", known_ops: Iterable[str] | None = None, *,
               inputs: int = 2, name: str = "genotype") -> Genotype:
    """One genotype from DARTS notation `[NAME =] Genotype(normal=[...], ...)`, read as data.

    `name` is used when the text has no `NAME =` prefix. `known_ops`, when given, is the set of
    operator names an edge may use.
    """
    parser = _Parser(text, path, inputs)
    parsed = parser.statement(name)
    if parser.tok.kind != "end":
        raise parser.error(f"unexpected {_describe(parser.tok)} after the genotype", parser.tok,
                           "to read a file of several genotypes use read_darts_genotypes")
    return _located(parsed, known_ops)


def read_darts_genotypes(text: str, path: str = "<darts>",
                         known_ops: Iterable[str] | None = None, *, inputs: int = 2
                         ) -> dict[str, Genotype]:
    """Every `NAME = Genotype(...)` (and alias `NAME = OTHER`) in a Python-like file, by name.

    Other statements (imports, PRIMITIVES lists, docstrings) are skipped, never run.
    """
    parser = _Parser(text, path, inputs)
    found: dict[str, Genotype] = {}
    depth = 0
    while parser.tok.kind != "end":
        tok = parser.tok
        nxt = parser.tokens[parser.pos + 1]
        third = parser.tokens[min(parser.pos + 2, len(parser.tokens) - 1)]
        if (depth == 0 and tok.first_on_line and tok.kind == "name" and nxt.text == "="
                and nxt.kind == "punct"):
            if third.kind == "name" and third.text == "Genotype":
                parser.spans = {}
                parsed = parser.statement(tok.text)
                found[tok.text] = _located(parsed, known_ops)
                continue
            after = parser.tokens[min(parser.pos + 3, len(parser.tokens) - 1)]
            if third.kind == "name" and third.text in found and after.first_on_line:
                found[tok.text] = evolve(found[third.text], name=tok.text)
        if tok.kind == "punct" and tok.text in _CLOSERS:
            depth += 1
        elif tok.kind == "punct" and tok.text in _CLOSERS.values():
            depth = max(depth - 1, 0)
        parser.advance()
    return found


def to_darts(g: Genotype, *, assign: bool = True) -> str:
    """DARTS notation on one line: pairs when every node has two edges, else FairDARTS triples."""
    validate_genotype(g)
    pairs = all(len(node.edges) == 2 for c in _CELLS for node in getattr(g, c).nodes)
    parts = []
    for c in _CELLS:
        cell = getattr(g, c)
        edges = []
        for pos, node in enumerate(cell.nodes):
            for e in node.edges:
                target = "" if pairs else f", {cell.node_index(pos)}"
                edges.append(f"({_quote(e.op)}{target}, {e.input})")
        parts.append(f"{c}=[{', '.join(edges)}]")
        parts.append(f"{c}_concat={_concat_text(cell.concat)}")
    call = f"Genotype({', '.join(parts)})"
    return f"{g.name} = {call}" if assign else call


def _quote(op: str) -> str:
    return "'" + op.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _concat_text(concat: tuple[int, ...]) -> str:
    # DARTS prints its concat as the repr of a range; keep that where a range says the same.
    if len(concat) > 1 and list(concat) == list(range(concat[0], concat[-1] + 1)):
        return f"range({concat[0]}, {concat[-1] + 1})"
    return "[" + ", ".join(str(n) for n in concat) + "]"


# ---------------------------------------------------------------------------------------------
# JSON


def to_json(g: Genotype) -> dict[str, Any]:
    """A JSON-ready dict: name, source, and per cell its inputs, nodes (edge lists) and concat."""
    out: dict[str, Any] = {"name": g.name}
    if g.source is not None:
        out["source"] = g.source
    for c in _CELLS:
        cell = getattr(g, c)
        out[c] = {
            "inputs": cell.inputs,
            "nodes": [[{"op": e.op, "input": e.input} for e in node.edges] for node in cell.nodes],
            "concat": list(cell.concat),
        }
    return out


class _JsonReader:
    def __init__(self, path: str):
        self.path = path

    def fail(self, message: str, at: str, hint: str | None = None) -> GenotypeError:
        prefix = f"{at}: " if at else ""
        return GenotypeError(prefix + message, Location.whole_file(self.path), hint)

    def obj(self, value: Any, at: str, required: tuple[str, ...], optional: tuple[str, ...]
            ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"expected an object, found {_json_kind(value)}", at)
        for key in value:
            if key not in required + optional:
                raise self.fail(f"unknown key '{key}'", at or "genotype",
                                did_you_mean(str(key), required + optional))
        for key in required:
            if key not in value:
                raise self.fail(f"missing key '{key}'", at or "genotype")
        return value

    def integer(self, value: Any, at: str) -> int:
        # bool is an int in Python but never a node number.
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"expected an integer, found {_json_kind(value)}", at)
        return value

    def string(self, value: Any, at: str) -> str:
        if not isinstance(value, str):
            raise self.fail(f"expected a string, found {_json_kind(value)}", at)
        return value

    def array(self, value: Any, at: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(f"expected a list, found {_json_kind(value)}", at)
        return value

    def cell(self, value: Any, at: str) -> CellGenotype:
        obj = self.obj(value, at, ("nodes", "concat"), ("inputs",))
        inputs = self.integer(obj.get("inputs", 2), f"{at}.inputs")
        nodes = []
        for p, node in enumerate(self.array(obj["nodes"], f"{at}.nodes")):
            edges = []
            for k, edge in enumerate(self.array(node, f"{at}.nodes[{p}]")):
                e_at = f"{at}.nodes[{p}][{k}]"
                e = self.obj(edge, e_at, ("op", "input"), ())
                edges.append(Edge(op=self.string(e["op"], f"{e_at}.op"),
                                  input=self.integer(e["input"], f"{e_at}.input")))
            nodes.append(Node(edges=tuple(edges)))
        concat = tuple(self.integer(n, f"{at}.concat[{m}]")
                       for m, n in enumerate(self.array(obj["concat"], f"{at}.concat")))
        return CellGenotype(nodes=tuple(nodes), concat=concat, inputs=inputs)


def _json_kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "an integer", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _json_path(where: Where) -> str:
    out = ""
    rest = list(where)
    while rest:
        step = rest.pop(0)
        if step in ("node", "edge"):
            idx = rest.pop(0)
            out += f".nodes[{idx}]" if step == "node" else f"[{idx}]"
        elif isinstance(step, int):
            out += f"[{step}]"
        else:
            out += f".{step}" if out else step
    return out


def from_json(obj: Any, path: str = "<json>", known_ops: Iterable[str] | None = None) -> Genotype:
    """A genotype from `to_json`'s dict, every problem named by its JSON path."""
    reader = _JsonReader(path)
    top = reader.obj(obj, "", ("name", "normal", "reduce"), ("source",))
    source = top.get("source")
    if source is not None:
        reader.string(source, "source")
    g = Genotype(name=reader.string(top["name"], "name"), normal=reader.cell(top["normal"], "normal"),
                 reduce=reader.cell(top["reduce"], "reduce"), source=source)
    for problem in _problems(g, known_ops):
        raise reader.fail(problem.message, _json_path(problem.where), problem.hint)
    return g


# ---------------------------------------------------------------------------------------------
# Loading by name or path


def genotypes_dir() -> Path:
    """The repository's `genotypes/` folder (published and found genotypes)."""
    import msrdsl

    return Path(msrdsl.__file__).resolve().parent.parent / "genotypes"


def genotype_names() -> list[str]:
    """Names of the genotypes shipped in `genotypes/`."""
    folder = genotypes_dir()
    return sorted(p.stem for p in folder.glob("*.genotype")) if folder.is_dir() else []


_DARTS_SUFFIXES = (".py", ".txt")


def load_genotype(name_or_path: str | Path, known_ops: Iterable[str] | None = None) -> Genotype:
    """A genotype from a `.genotype`, `.json` or DARTS-notation `.py`/`.txt` file, or by name
    from `genotypes/`. `FILE.py:NAME` picks one genotype from a file that holds several."""
    text = str(name_or_path)
    path, selector = Path(text), None
    if not path.is_file() and ":" in text:
        head, _, tail = text.rpartition(":")
        if Path(head).is_file() and _IDENT.fullmatch(tail):
            path, selector = Path(head), tail
    if path.is_file():
        return validate_genotype(_load_file(path, selector), known_ops)
    looks_like_path = (path.suffix in (".genotype", ".json", *_DARTS_SUFFIXES)
                       or "/" in text or "\\" in text)
    if looks_like_path:
        raise GenotypeError(f"no such genotype file: {text}")
    return validate_genotype(_load_named(text), known_ops)


def _load_file(path: Path, selector: str | None) -> Genotype:
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GenotypeError(f"cannot read {where}: {exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".genotype":
        from msrdsl.lang import parse_genotype_file  # the lead's parser; imported lazily

        return _pick(_as_named(parse_genotype_file(path)), selector, where)
    if suffix == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            loc = Location(where, exc.lineno, exc.colno, exc.lineno, exc.colno + 1, text)
            raise GenotypeError(f"invalid JSON: {exc.msg}", loc) from None
        return from_json(obj, where)
    if suffix in _DARTS_SUFFIXES:
        found = read_darts_genotypes(text, where)
        if not found:
            # A bare `Genotype(...)` without a name: read it strictly to locate what is wrong.
            return from_darts(text, where, name=_identifier(path.stem))
        return _pick(found, selector, where)
    raise GenotypeError(f"cannot tell the format of {where}",
                        hint="use .genotype, .json, or .py/.txt holding DARTS notation")


def _as_named(result: Any) -> dict[str, Genotype]:
    if isinstance(result, Genotype):
        return {result.name: result}
    if isinstance(result, Mapping):
        return dict(result)
    return {g.name: g for g in result}


def _pick(found: Mapping[str, Genotype], selector: str | None, where: str) -> Genotype:
    if selector is None:
        if len(found) == 1:
            return next(iter(found.values()))
        raise GenotypeError(f"{where} holds {len(found)} genotypes: {', '.join(found)}",
                            hint=f"pick one as {where}:NAME")
    if selector not in found:
        raise GenotypeError(f"{where} has no genotype '{selector}'",
                            hint=did_you_mean(selector, found))
    return found[selector]


def _load_named(name: str) -> Genotype:
    names = genotype_names()
    wanted = _identifier(name)
    if wanted not in names:
        available = ", ".join(names) or "none"
        close = did_you_mean(wanted, names)
        hint = close if close and close.startswith("did you mean") else None
        raise GenotypeError(f"unknown genotype '{name}' (available: {available})", hint=hint)
    return _load_file(genotypes_dir() / f"{wanted}.genotype", None)


def _identifier(text: str) -> str:
    """`PC-DARTS.cifar` -> `pc_darts_cifar`: how names are looked up and derived from files."""
    out = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_").lower() or "genotype"
    if out[0].isdigit() or keyword.iskeyword(out):
        out = "g_" + out
    return out
