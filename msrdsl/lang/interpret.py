"""Syntax -> IR: `extends` chains, `--set` overrides, and the schema-driven reading of entries.

The settings classes of msrdsl/ir.py are the schema: an entry's key names a field, the field's
metadata says what its value may be. So an unknown key, a wrong type or an out-of-range number is
reported at the entry that wrote it, whichever file of an `extends` chain that was.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

import attrs

from msrdsl.errors import Location, SpaceError, did_you_mean
from msrdsl.ir import (
    PRIMITIVES,
    Call,
    Name,
    Negate,
    OpDef,
    Rule,
    SelectSpec,
    Selection,
    Space,
    meta,
    schema,
)
from msrdsl.lang.syntax import (
    Entry,
    RuleDecl,
    SpaceDecl,
    SpaceFile,
    parse_override_syntax,
    parse_space_syntax,
)

PRELUDE_PATH = "<prelude>"
# Keys of the select block that write a rule inline instead of naming one.
_INLINE_RULE_KEYS = ("op", "edge", "exclude")


@functools.cache
def load_prelude() -> SpaceFile:
    """The standard operators and rules, parsed from prelude.space (written in the language)."""
    text = resources.files("msrdsl.lang").joinpath("prelude.space").read_text()
    return parse_space_syntax(text, PRELUDE_PATH)


def prelude_ops() -> dict[str, OpDef]:
    return {op.name: op for op in load_prelude().ops}


# ---------------------------------------------------------------------------------------------
# Files and `extends`


def read_text(path: str | Path, at: Location | None = None) -> str:
    """A file's text, or a located error saying why it cannot be read.

    `at` is where the file was named (an `extends`); without it the error is located at the file.
    Undecodable bytes are located in the file itself, at the first bad byte."""
    where = at if at is not None else Location.whole_file(str(path))
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SpaceError(f"cannot read '{path}': no such file", where) from None
    except IsADirectoryError:
        raise SpaceError(f"cannot read '{path}': it is a folder", where) from None
    except ValueError as err:  # a path with a NUL byte
        raise SpaceError(f"cannot read '{path}': {err}", where) from None
    except OSError as err:
        raise SpaceError(f"cannot read '{path}': {err.strerror or err}", where) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        shown = data.decode("utf-8", errors="replace")
        before = data[:err.start].decode("utf-8", errors="replace")
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        loc = Location(str(path), line, col, line, col + 1, shown)
        raise SpaceError(f"the file is not UTF-8 text (byte 0x{data[err.start]:02x}: {err.reason})",
                         loc,
                         f"named by 'extends' at {at}" if at is not None and at.line > 0
                         else "save the file as UTF-8") from None


@attrs.define
class _Resolved:
    """A space declaration with its `extends` chain merged, and the definitions it can see."""

    decl: SpaceDecl
    entries: tuple[Entry, ...]
    ops: dict[str, OpDef]
    rules: dict[str, RuleDecl]
    user_ops: list[OpDef]
    user_rules: list[RuleDecl]


def _the_space(syntax: SpaceFile, text_path: str) -> SpaceDecl:
    if not syntax.spaces:
        raise SpaceError("this file declares no space", Location.whole_file(text_path),
                         "a .space file holds one `space NAME { ... }` block")
    if len(syntax.spaces) > 1:
        second = syntax.spaces[1]
        raise SpaceError(f"a second space '{second.name}' in one file", second.loc,
                         "put each space in its own file; use `extends` to share settings")
    return syntax.spaces[0]


def _resolve(syntax: SpaceFile, seen: tuple[str, ...]) -> _Resolved:
    decl = _the_space(syntax, syntax.path)
    _check_duplicate_keys(decl.entries)
    for rule in syntax.rules:
        _check_duplicate_keys(rule.entries)
    if decl.extends is None:
        base = _Resolved(decl, (), prelude_ops(), {r.name: r for r in load_prelude().rules}, [], [])
    else:
        if not decl.extends.strip() or "\0" in decl.extends:
            raise SpaceError("'extends' needs the name of a .space file", decl.extends_loc,
                             'e.g. extends "msr.space" (relative to this file)')
        parent_path = _sibling(syntax.path, decl.extends)
        key = str(Path(parent_path).resolve())
        if key in seen:
            chain = " -> ".join(Path(p).name for p in (*seen, key))
            raise SpaceError(f"'extends' makes a cycle: {chain}", decl.extends_loc)
        text = read_text(parent_path, decl.extends_loc)
        base = _resolve(parse_space_syntax(text, parent_path), (*seen, key))
    ops, rules = dict(base.ops), dict(base.rules)
    for op in syntax.ops:
        _check_op_def(op)
        if op.name in ops:
            where = ops[op.name].loc
            raise SpaceError(f"operator '{op.name}' is already defined"
                             + (f" at {where}" if where and where.path != PRELUDE_PATH else " in the prelude"),
                             op.loc, "choose another name")
        ops[op.name] = op
    for rule in syntax.rules:
        if rule.name in rules:
            raise SpaceError(f"rule '{rule.name}' is already defined", rule.loc, "choose another name")
        rules[rule.name] = rule
    return _Resolved(decl, merge_entries(base.entries, decl.entries), ops, rules,
                     [*base.user_ops, *syntax.ops], [*base.user_rules, *syntax.rules])


def _check_op_def(op: OpDef) -> None:
    """What a definition says on its own: distinct parameters, one pipeline per stride 1 or 2."""
    if op.name in PRIMITIVES:
        raise SpaceError(f"'{op.name}' is a primitive; an operator cannot take its name", op.loc,
                         "choose another name")
    for i, param in enumerate(op.params):
        if param == "stride":
            raise SpaceError(f"operator '{op.name}' has a parameter named 'stride'", op.loc,
                             "`stride` is always the edge's stride; name the parameter otherwise")
        if param in op.params[:i]:
            raise SpaceError(f"operator '{op.name}' names parameter '{param}' twice", op.loc)
    seen: set[int] = set()
    for variant in op.variants:
        if variant.stride is None:
            continue
        if variant.stride not in (1, 2):
            raise SpaceError(f"operator '{op.name}' has a pipeline for stride {variant.stride}",
                             variant.loc, "edges have stride 1 or 2")
        if variant.stride in seen:
            raise SpaceError(f"operator '{op.name}' has two pipelines for stride {variant.stride}",
                             variant.loc)
        seen.add(variant.stride)


def _sibling(path: str, relative: str) -> str:
    base = Path(path).parent if not path.startswith("<") else Path.cwd()
    return str(base / relative)


def _check_duplicate_keys(entries: Sequence[Entry]) -> None:
    first: dict[str, Entry] = {}
    for e in entries:
        if e.key in first:
            raise SpaceError(f"'{e.key}' is set twice in one block", e.key_loc,
                             f"first set at line {first[e.key].loc.line}" if first[e.key].loc else None)
        first[e.key] = e
        if e.block:
            _check_duplicate_keys(e.block)


def merge_entries(parent: Sequence[Entry], child: Sequence[Entry]) -> tuple[Entry, ...]:
    """`child` written over `parent`: blocks merge key by key, values replace."""
    out = list(parent)
    for c in child:
        index = next((i for i, p in enumerate(out) if p.key == c.key), None)
        if index is None:
            out.append(c)
            continue
        p = out[index]
        value = c.value if c.value is not None else p.value
        if c.value is None and c.block is not None and _is_off(p.value):
            value = None  # writing the block of a section the parent switched off switches it on
        if _is_off(c.value) or _renames(p, c):
            block = c.block
        elif c.block is not None and p.block is not None:
            block = merge_entries(_drop_conflicts(p.block, c), c.block)
        else:
            block = c.block if c.block is not None else _drop_conflicts(p.block, c)
        if c.key == "select" and c.block and any(e.key in _INLINE_RULE_KEYS for e in c.block) \
                and c.value is None:
            value = None  # an inline rule replaces the parent's named one
        out[index] = attrs.evolve(c, value=value, block=block,
                                  value_loc=c.value_loc if c.value is not None else p.value_loc)
    return tuple(out)


def _from_set(e: Entry) -> bool:
    return e.loc is not None and e.loc.path == "--set"


def _renames(parent: Entry, child: Entry) -> bool:
    """Whether the child names a different data set, optimiser or epoch rule in a block's head:
    the parent's settings inside belong to the old one (a CIFAR folder is no digits folder), so
    the block starts afresh. `select` is the exception: its block holds the epoch rule and the
    recorded rules, which do not depend on the rule it names."""
    return (parent.key != "select" and isinstance(parent.value, Name)
            and isinstance(child.value, Name) and parent.value.id != child.value.id)


def _is_off(value: Any) -> bool:
    return isinstance(value, Name) and value.id == "off"


def _drop_conflicts(block: tuple[Entry, ...] | None, child: Entry) -> tuple[Entry, ...] | None:
    # A rule named in the child's select replaces the parent's inline one.
    if block is None or child.key != "select" or child.value is None:
        return block
    return tuple(e for e in block if e.key not in _INLINE_RULE_KEYS)


# ---------------------------------------------------------------------------------------------
# `--set path=value`


def parse_override(text: str) -> tuple[tuple[str, ...], Any, Location, tuple[Location, ...]]:
    """`search.epochs=5` -> (("search", "epochs"), 5, location of the value, of each key).

    Locations are columns of the whole `path=value` text, so a bad value is marked where it
    stands after the '='."""
    whole = Location("--set", 1, 1, 1, len(text) + 1, text)
    path, eq, value_text = text.partition("=")
    keys = tuple(k.strip() for k in path.split("."))
    if not eq or not all(k.isidentifier() for k in keys):
        raise SpaceError(f"'--set {text}' is not of the form path.to.key=value", whole,
                         "for example: --set search.epochs=5")
    if not value_text.strip():
        end = len(path) + 2
        raise SpaceError(f"'--set {text}' gives no value after '='",
                         Location("--set", 1, end, 1, end + 1, text),
                         "for example: --set search.epochs=5")
    keys, value, key_locs, value_loc = parse_override_syntax(text)
    return keys, value, value_loc, key_locs


def apply_override(entries: tuple[Entry, ...], keys: tuple[str, ...], value: Any,
                   loc: Location, key_locs: tuple[Location, ...] = ()) -> tuple[Entry, ...]:
    """Write `value` at the entry path `keys`, creating entries as needed (as `extends` would)."""
    key, rest = keys[0], keys[1:]
    key_loc = key_locs[0] if key_locs else loc
    here = next((e for e in entries if e.key == key), None)
    if not rest:
        new = Entry(key, value, None if _is_off(value) else (here.block if here else None),
                    loc=loc, key_loc=key_loc, value_loc=loc)
        if here is not None and here.key == "select":
            new = attrs.evolve(new, block=_drop_conflicts(here.block, new))
        return _replace(entries, here, new)
    inner = here.block if here is not None and here.block is not None else ()
    # An entry that had no block gets one here: problems with that block are the --set's.
    written = here is not None and here.block is not None
    value_here = here.value if here is not None and not _is_off(here.value) else None
    if key == "select" and rest[0] in _INLINE_RULE_KEYS and len(rest) == 1:
        value_here = None  # an inline rule replaces the named one, as in a child file
    new = Entry(key, value_here, apply_override(inner, rest, value, loc, key_locs[1:]),
                loc=here.loc if written else key_loc, key_loc=here.key_loc if written else key_loc,
                value_loc=here.value_loc if here is not None and value_here is not None else None)
    return _replace(entries, here, new)


def _replace(entries: tuple[Entry, ...], old: Entry | None, new: Entry) -> tuple[Entry, ...]:
    if old is None:
        return (*entries, new)
    return tuple(new if e is old else e for e in entries)


# ---------------------------------------------------------------------------------------------
# Entries -> IR


class _Reader:
    def __init__(self, resolved: _Resolved):
        self.resolved = resolved
        self.locs: dict[str, Location] = {}

    def space(self) -> Space:
        decl = self.resolved.decl
        values = self.fields(Space, self.resolved.entries, "", exclude=("name",))
        rules = tuple(self.rule(r) for r in self.resolved.rules.values())
        return Space(decl.name, **values, ops=tuple(self.resolved.ops.values()), rules=rules,
                     extends=decl.extends, loc=decl.loc, locs=dict(self.locs),
                     user_ops=tuple(o.name for o in self.resolved.user_ops),
                     user_rules=tuple(r.name for r in self.resolved.user_rules))

    def fields(self, cls: type, entries: Iterable[Entry], prefix: str, head: tuple | None = None,
               exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        known = {f.name: f for f in schema(cls) if f.name not in exclude}
        out: dict[str, Any] = {}
        if head is not None:
            field_name, value, loc = head
            # Messages name the head by the key it was written after (`epoch last`).
            key = prefix.rstrip(".").rsplit(".", 1)[-1]
            self.locs.setdefault(prefix + field_name, loc)
            out[field_name] = convert(meta(known[field_name]), value, loc, key)
        for e in entries:
            if cls is SelectSpec and e.key in _INLINE_RULE_KEYS:
                continue
            if head is not None and e.key == head[0] and _from_set(e):
                pass  # `--set dataset.name=X` names the head from outside the file: it wins
            elif head is not None and e.key == head[0]:
                key = prefix.rstrip(".").rsplit(".", 1)[-1]
                raise SpaceError(f"'{e.key}' is given twice: after '{key}' and inside its block",
                                 e.key_loc, f"keep one of the two; `{key} VALUE {{ ... }}` sets "
                                 f"'{e.key}'")
            f = known.get(e.key)
            if f is None:
                where = prefix.rstrip(".") or "a space"
                raise SpaceError(f"unknown setting '{e.key}' in {where}", e.key_loc,
                                 did_you_mean(e.key, known))
            out[f.name] = self.entry(f, e, prefix + f.name)
        if cls is SelectSpec:
            inline = [e for e in entries if e.key in _INLINE_RULE_KEYS]
            if inline:
                if head is not None:
                    raise SpaceError("select names a rule and also writes one inline",
                                     inline[0].key_loc, "keep one of the two")
                out["rule"] = self.rule(RuleDecl(self.resolved.decl.name, tuple(inline),
                                                 loc=inline[0].loc), inline=True)
        return out

    def entry(self, f: attrs.Attribute, e: Entry, path: str) -> Any:
        m = meta(f)
        self.locs[path] = e.value_loc or e.loc
        if m["kind"] != "block":
            if e.block is not None:
                raise SpaceError(f"'{e.key}' takes a value, not a block", e.key_loc)
            return self.value(f, e.value, e.value_loc or e.loc, path)
        cls = m["cls"]
        if _is_off(e.value):
            if not m["optional"]:
                raise SpaceError(f"'{e.key}' cannot be switched off", e.value_loc)
            return None
        head = None
        if e.value is not None:
            if m["head"] is None:
                raise SpaceError(f"'{e.key}' takes a block {{ ... }}, not a value", e.value_loc)
            head = (m["head"], e.value, e.value_loc)
        values = self.fields(cls, e.block or (), path + ".", head)
        # What a block leaves unsaid keeps the field's default (the architecture optimiser's is
        # DARTS' Adam, not OptimizerSpec's SGD), as an `extends` child keeps its parent's.
        if isinstance(f.default, cls):
            return attrs.evolve(f.default, **values, loc=e.loc)
        return cls(**values, loc=e.loc)

    def value(self, f: attrs.Attribute, value: Any, loc: Location | None, path: str) -> Any:
        self.locs.setdefault(path, loc)
        return convert(meta(f), value, loc, path.rsplit(".", 1)[-1])

    def rule(self, decl: RuleDecl, inline: bool = False) -> Rule:
        who = "the rule written in select" if inline else f"rule '{decl.name}'"
        parts: dict[str, Any] = {}
        for e in decl.entries:
            if e.key in ("op", "edge"):
                if e.block is not None:
                    raise SpaceError(f"'{e.key}' takes argmin(...) or argmax(...), not a block",
                                     e.key_loc)
                parts[e.key] = _selection(e)
            elif e.key == "exclude":
                names = convert({"kind": "names", "choices": ()}, e.value, e.value_loc, "exclude")
                parts["exclude"] = names
                self.locs[f"rule.{decl.name}.exclude"] = e.value_loc
            else:
                raise SpaceError(f"unknown setting '{e.key}' in {who}", e.key_loc,
                                 did_you_mean(e.key, ("op", "edge", "exclude")))
        for needed in ("op", "edge"):
            if needed not in parts:
                raise SpaceError(f"{who} has no '{needed}' choice", decl.loc,
                                 f"add `{needed} argmin(SCORE)` or `{needed} argmax(SCORE)`")
        return Rule(decl.name, parts["op"], parts["edge"], parts.get("exclude", ()), loc=decl.loc)


def _selection(e: Entry) -> Selection:
    v = e.value
    if not (isinstance(v, Call) and v.name in ("argmin", "argmax") and len(v.args) == 1
            and not v.kwargs):
        raise SpaceError(f"'{e.key}' must be argmin(SCORE) or argmax(SCORE)", e.value_loc or e.loc)
    return Selection(v.name, v.args[0], loc=e.value_loc)


def convert(m: dict, value: Any, loc: Location | None, key: str) -> Any:
    """Check one written value against its field's kind and range; return the IR value."""
    kind = m["kind"]
    if value is None:
        raise SpaceError(f"'{key}' needs a value", loc)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpaceError(f"'{key}' must be a whole number, got {_show(value)}", loc)
        _check_range(m, value, loc, key)
        return value
    if kind in ("float", "number"):
        if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
            raise SpaceError(f"'{key}' must be a number, got {_show(value)}", loc)
        _check_range(m, value, loc, key)
        if kind == "float":
            return _float(value, loc, key)
        return value if not isinstance(value, int) else Fraction(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise SpaceError(f"'{key}' must be true or false, got {_show(value)}", loc)
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise SpaceError(f"'{key}' must be a quoted string, got {_show(value)}", loc,
                             f'write it in double quotes: "{_show(value)}"')
        return value
    if kind == "name":
        if not isinstance(value, Name):
            raise SpaceError(f"'{key}' must be a name, got {_show(value)}", loc,
                             "one of: " + ", ".join(m["choices"]) if m["choices"] else None)
        if m["choices"] and value.id not in m["choices"]:
            raise SpaceError(f"'{key}' cannot be '{value.id}'", value.loc or loc,
                             did_you_mean(value.id, m["choices"]))
        return value.id
    if kind == "names":
        items = value if isinstance(value, tuple) else None
        if items is None or not all(isinstance(i, Name) for i in items):
            raise SpaceError(f"'{key}' must be a list of names, like [a, b]", loc)
        return tuple(i.id for i in items)
    if kind == "numbers":
        if not isinstance(value, tuple) or not all(
                isinstance(i, (int, float, Fraction)) and not isinstance(i, bool) for i in value):
            raise SpaceError(f"'{key}' must be a list of numbers, like [0.5, 0.999]", loc)
        return tuple(_float(i, loc, key) for i in value)
    if kind == "fractions":
        if not isinstance(value, tuple) or not all(
                isinstance(i, (int, Fraction)) and not isinstance(i, bool) for i in value):
            raise SpaceError(f"'{key}' must be a list of fractions or cell indices, like [1/3, 2/3]",
                             loc, "write fractions as 1/3, not 0.333, so positions are exact")
        return tuple(i if isinstance(i, int) else i for i in value)
    if kind == "score":
        if not isinstance(value, (Name, Call, Negate)):
            raise SpaceError(f"'{key}' must be a score expression, got {_show(value)}", loc)
        return value
    if kind == "rule":
        if not isinstance(value, Name):
            raise SpaceError(f"'{key}' must name a rule, got {_show(value)}", loc)
        return value.id
    raise AssertionError(f"unknown setting kind {kind}")


def _float(value: Any, loc: Location | None, key: str) -> float:
    try:
        return float(value)
    except OverflowError:
        raise SpaceError(f"'{key}' is too large for a floating-point number", loc) from None


def _check_range(m: dict, value: Any, loc: Location | None, key: str) -> None:
    if m["low"] is not None and value < m["low"]:
        raise SpaceError(f"'{key}' must be at least {m['low']}, got {_show(value)}", loc)
    if m["high"] is not None and value > m["high"]:
        raise SpaceError(f"'{key}' must be at most {m['high']}, got {_show(value)}", loc)


def _show(value: Any) -> str:
    from msrdsl.lang.printer import format_value

    return format_value(value)


# ---------------------------------------------------------------------------------------------
# Entry points


def space_from_syntax(syntax: SpaceFile, overrides: Sequence[str] = ()) -> Space:
    """Give a parsed file meaning: resolve `extends`, apply `--set`s, read the schema, validate."""
    from msrdsl.lang.validate import validate_space

    key = str(Path(syntax.path).resolve()) if not syntax.path.startswith("<") else syntax.path
    resolved = _resolve(syntax, (key,))
    for text in overrides:
        keys, value, loc, key_locs = parse_override(text)
        resolved.entries = apply_override(resolved.entries, keys, value, loc, key_locs)
    space = _Reader(resolved).space()
    validate_space(space)
    return space


def parse_space(text: str, path: str = "<space>", overrides: Sequence[str] = ()) -> Space:
    """Parse and validate the text of a .space file (`extends` is relative to `path`)."""
    return space_from_syntax(parse_space_syntax(text, path), overrides)


def load_space(path: str | Path, overrides: Sequence[str] = ()) -> Space:
    """Read, parse and validate a .space file."""
    return parse_space(read_text(path), str(path), overrides)
