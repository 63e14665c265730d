"""Hypothesis strategies for the .space and .genotype languages.

Public so that any test (ours or a user's) can draw valid inputs:

- `spaces()`: valid `msrdsl.ir.Space` IRs, as `parse_space` would build them (prelude operators
  and rules included), with user-defined operators (parameters, per-stride pipelines), named and
  inline rules, score expressions built from the score registry, optional blocks on and off,
  floats with tiny and huge exponents, and strings with quotes, backslashes and any Unicode;
- `genotypes()`: valid `msrdsl.genotype.Genotype`s;
- `space_texts()`, `genotype_texts()`: their canonical text (through the printers);
- `entry_texts()`: well-formed but mostly meaningless spaces (random keys and values in the
  grammar's shape), to exercise the schema reader and validation;
- `token_soups()`: random sequences of the grammar's own terminals;
- `mutations(text)`: token- and character-level damage to a valid text (deleted, duplicated,
  swapped or inserted tokens; deleted, inserted or replaced characters; truncation);
  `byte_mutations(data)` does the same to bytes, including invalid UTF-8.

Every strategy draws from the language's own tables (the schema in msrdsl/ir.py, the score
registry, the prelude, the grammar's terminals), so they follow the language as it grows.
"""

from __future__ import annotations

import functools
import keyword
import re
from fractions import Fraction
from typing import Any

from attrs import fields
from hypothesis import strategies as st

from msrdsl.genotype import CellGenotype, Edge, Genotype, Node
from msrdsl.ir import (
    ArchSpec,
    Call,
    CellSpec,
    DatasetSpec,
    EpochRule,
    EvaluateSpec,
    Name,
    Negate,
    NetworkSpec,
    OpDef,
    OptimizerSpec,
    OpVariant,
    Rule,
    SearchSpec,
    SelectSpec,
    Selection,
    Space,
    SpectralNormSpec,
    SupernetSpec,
    meta,
    schema,
)

__all__ = [
    "byte_mutations",
    "entry_texts",
    "genotype_texts",
    "genotypes",
    "identifiers",
    "mutations",
    "space_texts",
    "spaces",
    "token_soups",
]

# Words that a value position reads as something other than a name.
_VALUE_WORDS = frozenset({"true", "false", "off"})


@functools.cache
def _prelude_space() -> Space:
    from msrdsl.lang import parse_space

    return parse_space("space prelude_only {}", "<testing>")


@functools.cache
def _prelude_conv_ops() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(operators with a convolution at both strides, operators without one), no parameters."""
    from msrdsl.oplib import last_conv, resolve_op

    space = _prelude_space()
    ops = {o.name: o for o in space.ops}
    with_conv, without = [], []
    for name, op in ops.items():
        if op.params:
            continue
        has = all(last_conv(resolve_op(ops, name, s)) is not None for s in (1, 2))
        (with_conv if has else without).append(name)
    return tuple(with_conv), tuple(without)


def _reserved() -> frozenset[str]:
    from msrdsl.ir import PRIMITIVES
    from msrdsl.scores import SCORE_FUNCTIONS, SCORE_NAMES

    space = _prelude_space()
    return frozenset({*PRIMITIVES, *(o.name for o in space.ops), *(r.name for r in space.rules),
                      *SCORE_FUNCTIONS, *SCORE_NAMES, *_VALUE_WORDS, "last_conv", "stride"})


@functools.cache
def identifiers(min_size: int = 1, max_size: int = 12) -> st.SearchStrategy[str]:
    """Names the language reads as names in every position (not `true`, `false` or `off`)."""
    first = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
    rest = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789",
                   min_size=min_size - 1, max_size=max_size - 1)
    return st.builds(str.__add__, first, rest).filter(lambda s: s not in _VALUE_WORDS)


@functools.cache
def _fresh_names() -> st.SearchStrategy[str]:
    # Names for new operators and rules: never a primitive, prelude name or score, sometimes a
    # keyword of the grammar (the contextual lexer must read it as a name there).
    reserved = _reserved()
    keywords = st.sampled_from(["op", "rule", "space", "extends", "genotype", "source", "node",
                                "concat", "normal", "reduce", "epoch", "select"])
    return st.one_of(identifiers(), keywords).filter(lambda s: s not in reserved)


# ---------------------------------------------------------------------------------------------
# Numbers and strings


@functools.cache
def floats(low: float = 0.0, high: float | None = None) -> st.SearchStrategy[float]:
    """Finite floats in [low, high], often with tiny or huge exponents."""
    wide = st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)
    exponents = st.builds(lambda m, e: m * 10.0 ** e, st.sampled_from([1.0, 2.5, 9.75]),
                          st.integers(-300, 300)).filter(
        lambda x: x >= low and (high is None or x <= high))
    return st.one_of(wide, exponents, st.sampled_from([low, 1e-3, 0.025, 3e-4]).filter(
        lambda x: high is None or x <= high))


def _fractions_between(low: Fraction, high: Fraction, *, open_high: bool = True
                       ) -> st.SearchStrategy[Fraction]:
    def make(num: int, den: int) -> Fraction:
        return Fraction(num, den)

    return st.builds(make, st.integers(0, 200), st.integers(1, 200)).filter(
        lambda f: low <= f and (f < high if open_high else f <= high))


@functools.cache
def texts() -> st.SearchStrategy[str]:
    """Strings with quotes, backslashes, control characters and any Unicode (no surrogates)."""
    special = st.sampled_from(['"', "\\", "\n", "\t", "\r", "\x00", "\x7f", "\u2028", "é", "数据",
                               "\U0001F600", "#", "{", "}"])
    return st.lists(st.one_of(st.text(max_size=6), special), max_size=6).map("".join)


# ---------------------------------------------------------------------------------------------
# Score expressions, from the registry


def _leaf_calls(exclude_data: bool) -> list[Any]:
    from msrdsl.scores import SCORE_FUNCTIONS

    return [fn for fn in SCORE_FUNCTIONS.values() if fn.argument == "last_conv"
            and not (exclude_data and fn.needs_data)]


@functools.cache
def _kwarg_value(spec: Any) -> st.SearchStrategy[Any]:
    if isinstance(spec, tuple):
        return st.sampled_from(spec).map(Name)
    if spec is bool:
        return st.booleans()
    if spec is int:
        return st.integers(1, 64)
    if spec is float:
        return st.one_of(floats(), floats().map(lambda x: -x))
    raise AssertionError(f"no strategy for a score option of type {spec!r}")


@st.composite
def _leaf(draw, exclude_data: bool) -> Call:
    fn = draw(st.sampled_from(_leaf_calls(exclude_data)))
    keys = draw(st.lists(st.sampled_from(sorted(fn.kwargs)), unique=True)) if fn.kwargs else []
    kwargs = tuple((k, draw(_kwarg_value(fn.kwargs[k]))) for k in keys)
    return Call(fn.name, (Name("last_conv"),), kwargs)


_LEVEL_ORDER = {"cell": 0, "type": 1, "edge": 2}


@functools.cache
def scores(level: str, *, alpha: bool = False, data: bool = True, depth: int = 3
           ) -> st.SearchStrategy[Any]:
    """Score expressions producing one score per `level` ("cell", "type" or "edge"), built from
    the registered score functions; `alpha`: may read alpha; `data`: may need validation data.
    `depth` bounds the wrappers that keep the level (softmax, negation)."""
    from msrdsl.scores import SCORE_FUNCTIONS, SCORE_NAMES

    options: list[st.SearchStrategy[Any]] = []
    if level == "cell":
        options.append(_leaf(not data))
    for name, (name_level, _) in SCORE_NAMES.items():
        if name_level == level and (alpha or name != "alpha"):
            options.append(st.just(Name(name)))
    for fn in SCORE_FUNCTIONS.values():
        if fn.argument != "score":
            continue
        for inner in fn.accepts:
            out = fn.level(inner) if callable(fn.level) else fn.level
            # Functions that reduce the level always terminate; the others need depth left.
            if out == level and (_LEVEL_ORDER[inner] < _LEVEL_ORDER[level] or depth > 0):
                options.append(st.deferred(
                    lambda i=inner: scores(i, alpha=alpha, data=data, depth=depth - 1)).map(
                    lambda e, n=fn.name: Call(n, (e,))))
    if depth > 0:
        options.append(st.deferred(
            lambda: scores(level, alpha=alpha, data=data, depth=depth - 1)).map(Negate))
    return st.one_of(options)


def _uses(expr: Any) -> tuple[bool, bool]:
    """(needs alpha, needs a convolution)."""
    from msrdsl.scores import check_score

    use = check_score(expr)
    return use.needs_alpha, use.needs_conv


# ---------------------------------------------------------------------------------------------
# User-defined operators


@functools.cache
def _odd_kernel() -> st.SearchStrategy[Any]:
    odd = st.sampled_from([1, 3, 5, 7])
    return st.one_of(odd, st.tuples(odd, odd))


@st.composite
def _conv_step(draw, kernel: Any, strided: bool) -> Call:
    kind = draw(st.sampled_from(["conv", "dwconv", "pwconv"]))
    kwargs: list[tuple[str, Any]] = []
    args: tuple[Any, ...] = ()
    if kind != "pwconv":
        args = (kernel,)
        if draw(st.booleans()):
            kwargs.append(("dilation", draw(st.sampled_from([1, 2]))))
    if kind == "conv" and draw(st.booleans()):
        kwargs.append(("groups", 1))
    if strided:
        kwargs.append(("stride", Name("stride")))
    if draw(st.booleans()):
        kwargs.reverse()
    return Call(kind, args, tuple(kwargs))


_PLAIN_STEPS = (Call("relu"), Call("bn"), Call("search_bn"), Call("identity"))


@st.composite
def _pipeline(draw, kernel: Any, *, conv: bool, fixed_stride: int | None) -> tuple[Call, ...]:
    """Steps whose strides multiply to the edge's stride (`fixed_stride`: a `stride N:` line)."""
    steps: list[Call] = list(draw(st.lists(st.sampled_from(_PLAIN_STEPS), max_size=2)))
    if conv:
        steps.append(draw(_conv_step(kernel, strided=fixed_stride is None)))
        if fixed_stride == 2:
            steps.insert(0, draw(st.sampled_from([
                Call("max_pool", (3,), (("stride", 2),)), Call("avg_pool", (3,), (("stride", 2),)),
                Call("factorized_reduce")])))
        steps += draw(st.lists(st.sampled_from([*_PLAIN_STEPS, Call("pwconv")]), max_size=2))
    else:
        stride = Name("stride") if fixed_stride is None else fixed_stride
        reducer = draw(st.sampled_from(["max_pool", "avg_pool", "zero"]))
        step = Call(reducer, (3,), (("stride", stride),)) if reducer != "zero" else \
            Call("zero", (), (("stride", stride),))
        if fixed_stride == 2 and draw(st.booleans()):
            step = Call("factorized_reduce")
        if fixed_stride == 1 and draw(st.booleans()):
            step = Call("identity")
        steps.append(step)
    return tuple(steps)


def _unique(name: str, used: set[str]) -> str:
    """`name`, or `name_N` if it is taken; recorded as taken."""
    if name in used:
        name = f"{name}_{len(used)}"
    used.add(name)
    return name


@st.composite
def _user_ops(draw, names: st.SearchStrategy[str]) -> tuple[OpDef, ...]:
    """Operators defined in a file: plain, per stride, or with a kernel parameter and an
    operator binding it."""
    out: list[OpDef] = []
    used: set[str] = set()
    for _ in range(draw(st.integers(0, 3))):
        name = _unique(draw(names), used)
        conv = draw(st.booleans())
        shape = draw(st.sampled_from(["plain", "strided", "param"]))
        if shape == "param" and conv:
            param = draw(identifiers())
            param = "k" if param == "stride" else param
            steps = draw(_pipeline(Name(param), conv=True, fixed_stride=None))
            out.append(OpDef(name, (param,), (OpVariant(steps),)))
            bound = _unique(draw(names), used)
            call = Call(name, (draw(_odd_kernel()),)) if draw(st.booleans()) else \
                Call(name, (), ((param, draw(_odd_kernel())),))
            out.append(OpDef(bound, (), (OpVariant((call,)),)))
        elif shape == "strided":
            kernel = draw(_odd_kernel())
            variants = [OpVariant(draw(_pipeline(kernel, conv=conv, fixed_stride=s)), s)
                        for s in (1, 2)]
            if draw(st.booleans()):
                variants.reverse()
            out.append(OpDef(name, (), tuple(variants)))
        else:
            steps = draw(_pipeline(draw(_odd_kernel()), conv=conv, fixed_stride=None))
            out.append(OpDef(name, (), (OpVariant(steps),)))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Settings sections, from the schema


@functools.cache
def _optimizer() -> st.SearchStrategy[OptimizerSpec]:
    return st.builds(
        OptimizerSpec,
        kind=st.sampled_from(["sgd", "adam"]), lr=floats(), lr_min=floats(),
        schedule=st.sampled_from(["cosine", "constant"]), momentum=floats(0.0, 1.0),
        betas=st.lists(floats(0.0, 1.0), max_size=3).map(tuple), weight_decay=floats())


@functools.cache
def _dataset() -> st.SearchStrategy[DatasetSpec]:
    return st.builds(
        DatasetSpec,
        name=st.sampled_from(meta(fields(DatasetSpec).name)["choices"]),
        root=st.none() | texts(),
        input_size=st.none() | st.integers(4, 512),
        split=st.one_of(_fractions_between(Fraction(1, 200), Fraction(1)),
                        st.floats(min_value=1e-9, max_value=1 - 1e-9)))


def _reduce_at(cells: int) -> st.SearchStrategy[tuple[Any, ...]]:
    item = st.one_of(_fractions_between(Fraction(0), Fraction(1)), st.integers(0, cells - 1))
    return st.lists(item, max_size=3).map(tuple)


@st.composite
def _rule(draw, name: str, *, alpha: bool, op_names: list[str]) -> Rule:
    op = Selection(draw(st.sampled_from(["argmin", "argmax"])),
                   draw(scores("type", alpha=alpha)))
    edge = Selection(draw(st.sampled_from(["argmin", "argmax"])),
                     draw(scores("edge", alpha=alpha)))
    exclude = tuple(draw(st.lists(st.sampled_from(op_names), unique=True, max_size=2)))
    return Rule(name, op, edge, exclude)


@st.composite
def spaces(draw, *, user_ops: bool = True, user_rules: bool = True) -> Space:
    """A valid Space, equal to what `parse_space(format_space(space))` gives back."""
    prelude = _prelude_space()
    names = _fresh_names()
    space_name = draw(names)

    ops = draw(_user_ops(names)) if user_ops else ()
    all_ops = {o.name: o for o in (*prelude.ops, *ops)}

    # Mixing first: it decides whether alpha exists.
    mix = draw(st.one_of(
        st.just(Name("uniform")), st.just(Call("softmax", (Name("alpha"),))),
        st.one_of(scores("cell", data=False), scores("type", data=False)).map(
            lambda e: Call("softmax", (e,)))))
    alpha = isinstance(mix, Call) and mix.args == (Name("alpha"),)

    taken = {space_name, *all_ops}
    rules: list[Rule] = []
    if user_rules:
        for _ in range(draw(st.integers(0, 2))):
            rule_name = _unique(draw(names), taken)
            rules.append(draw(_rule(rule_name, alpha=alpha, op_names=sorted(all_ops))))
    available = [r for r in (*prelude.rules, *rules) if alpha or not _uses(r.op.score)[0]
                 and not _uses(r.edge.score)[0]]
    if draw(st.booleans()) or not available:
        selected: Rule | str = draw(_rule(space_name, alpha=alpha, op_names=sorted(all_ops)))
        chosen = [selected]
    else:
        selected = draw(st.sampled_from(available)).name
        chosen = [r for r in available if r.name == selected]
    record = draw(st.lists(st.sampled_from([r.name for r in available]), unique=True, max_size=2)
                  ) if available else []
    chosen += [r for r in available if r.name in record]

    # Operators: those with a convolution wherever something measures one.
    needs_conv = _uses(mix)[1] if isinstance(mix, Call) else False
    conv_excluded: set[str] | None = None
    for rule in chosen:
        if _uses(rule.op.score)[1] or _uses(rule.edge.score)[1]:
            needs_conv = True
            conv_excluded = set(rule.exclude) if conv_excluded is None else \
                conv_excluded & set(rule.exclude)
    if _uses(mix)[1] if isinstance(mix, Call) else False:
        conv_excluded = set()
    with_conv, without = _prelude_conv_ops()
    user_conv = [o.name for o in ops if not o.params and _has_conv(all_ops, o.name)]
    user_plain = [o.name for o in ops if not o.params and not _has_conv(all_ops, o.name)]
    candidates = [*with_conv, *user_conv]
    if not needs_conv:
        candidates += [*without, *user_plain]
    elif conv_excluded:
        candidates += [n for n in (*without, *user_plain) if n in conv_excluded]
    operators = tuple(draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=5,
                                    unique=True)))

    cell_inputs = draw(st.integers(1, 4))
    cell = CellSpec(inputs=cell_inputs, nodes=draw(st.integers(1, 6)),
                    keep=draw(st.integers(1, cell_inputs)))
    search_cells = draw(st.integers(1, 20))
    eval_cells = draw(st.integers(1, 30))
    network = NetworkSpec(cells=search_cells, channels=draw(st.integers(1, 64)),
                          stem_multiplier=draw(st.integers(1, 4)),
                          reduce_at=draw(_reduce_at(min(search_cells, eval_cells))))
    spectral = draw(st.none() | st.builds(
        SpectralNormSpec, bound=floats(), method=st.sampled_from(["power", "exact"]),
        power_iterations=st.integers(1, 50)))
    supernet = SupernetSpec(mix=mix, refresh=draw(st.sampled_from(["epoch", "step"])),
                            alpha_init=draw(floats()), spectral_norm=spectral)
    select = SelectSpec(
        rule=selected,
        epoch=EpochRule(draw(st.sampled_from(meta(fields(EpochRule).rule)["choices"])),
                        draw(st.integers(1, 20))),
        record=tuple(record))
    search = SearchSpec(
        epochs=draw(st.integers(1, 10**6)), batch=draw(st.integers(1, 4096)),
        seed=draw(st.integers(0, 2**64)), optimizer=draw(_optimizer()),
        grad_clip=draw(floats()), augment=draw(st.booleans()),
        arch=ArchSpec(optimizer=draw(_optimizer()),
                      order=draw(st.sampled_from(["first", "second"]))))
    evaluate = EvaluateSpec(
        net=draw(st.sampled_from(["cifar", "imagenet"])), dataset=draw(st.none() | _dataset()),
        cells=eval_cells, channels=draw(st.integers(1, 256)), epochs=draw(st.integers(1, 10**4)),
        batch=draw(st.integers(1, 4096)), seed=draw(st.integers(0, 2**32)),
        optimizer=draw(_optimizer()), grad_clip=draw(floats()), cutout=draw(st.integers(0, 64)),
        drop_path=draw(floats(0.0, 1.0)), auxiliary=draw(floats()),
        label_smoothing=draw(floats(0.0, 1.0)), warmup=draw(st.integers(0, 100)))
    return Space(
        space_name, dataset=draw(_dataset()), operators=operators, cell=cell, network=network,
        supernet=supernet, select=select, search=search, evaluate=evaluate,
        ops=(*prelude.ops, *ops), rules=(*prelude.rules, *rules),
        user_ops=tuple(o.name for o in ops), user_rules=tuple(r.name for r in rules))


def _has_conv(ops: dict[str, OpDef], name: str) -> bool:
    from msrdsl.oplib import last_conv, resolve_op

    return all(last_conv(resolve_op(ops, name, s)) is not None for s in (1, 2))


def space_texts(**kwargs: Any) -> st.SearchStrategy[str]:
    """The canonical text of a valid space."""
    from msrdsl.lang import format_space

    return spaces(**kwargs).map(format_space)


# ---------------------------------------------------------------------------------------------
# Genotypes


@st.composite
def _cell(draw, inputs: int, ops: st.SearchStrategy[str]) -> CellGenotype:
    nodes = []
    for position in range(draw(st.integers(1, 5))):
        number = inputs + position
        pairs = draw(st.lists(st.tuples(ops, st.integers(0, number - 1)), min_size=1,
                              max_size=3, unique=True))
        nodes.append(Node(tuple(Edge(op, i) for op, i in pairs)))
    last = inputs + len(nodes) - 1
    concat = draw(st.lists(st.integers(0, last), min_size=1, unique=True))
    return CellGenotype(tuple(nodes), tuple(concat), inputs=inputs)


@st.composite
def genotypes(draw, *, known_ops: bool = False) -> Genotype:
    """A valid genotype (both cells read the same number of inputs). `known_ops`: only the
    prelude's operators, so that `msrdsl check` accepts it as well."""
    with_conv, without = _prelude_conv_ops()
    prelude = st.sampled_from(sorted((*with_conv, *without)))
    ops = prelude if known_ops else st.one_of(prelude, identifiers(max_size=16))
    inputs = draw(st.integers(1, 3))
    return Genotype(draw(identifiers()), draw(_cell(inputs, ops)), draw(_cell(inputs, ops)),
                    draw(st.none() | texts()))


@functools.cache
def _header_lines() -> st.SearchStrategy[str]:
    # One line for every reader: no character that str.splitlines() or Lark would break at.
    breaks = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    return st.text(max_size=30).map(
        lambda t: ("# " + "".join(c for c in t if c not in breaks)).rstrip())


@st.composite
def genotype_texts(draw, **kwargs: Any) -> str:
    """The canonical text of a valid genotype, sometimes under header comments."""
    from msrdsl.lang import format_genotype

    header = draw(st.lists(_header_lines(), max_size=3))
    return format_genotype(draw(genotypes(**kwargs)), tuple(header))


# ---------------------------------------------------------------------------------------------
# Well-formed nonsense: the grammar's shape with random keys and values


def _schema_keys() -> list[str]:
    keys: set[str] = {"op", "edge", "exclude", "off"}
    for cls in (Space, DatasetSpec, CellSpec, NetworkSpec, SupernetSpec, SpectralNormSpec,
                SelectSpec, EpochRule, OptimizerSpec, ArchSpec, SearchSpec, EvaluateSpec):
        keys.update(f.name for f in schema(cls))
    return sorted(keys)


@functools.cache
def _words() -> st.SearchStrategy[str]:
    from msrdsl.ir import PRIMITIVES
    from msrdsl.scores import SCORE_FUNCTIONS

    return st.sampled_from([*_schema_keys(), *SCORE_FUNCTIONS, *PRIMITIVES, "alpha", "last_conv",
                            "uniform", "argmin", "argmax", "cifar10", "digits", "sgd", "adam",
                            "msr", "darts", "msr_max", "none", "skip_connect", "sep_conv_3x3",
                            "sep_conv", "true", "false", "off", "stride"]) | identifiers(max_size=6)


def _arg_texts(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(values, st.tuples(_words(), values).map("=".join))


@functools.cache
def _value_texts(depth: int = 2) -> st.SearchStrategy[str]:
    from msrdsl.lang.printer import format_value

    words = _words()

    scalars = st.one_of(
        st.integers(-3, 40).map(str), st.integers(0, 10**30).map(str),
        floats().map(format_value), st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.tuples(st.integers(0, 9), st.integers(0, 9)).map(lambda t: f"{t[0]}/{t[1]}"),
        texts().map(format_value), st.just('"\\q"'), words)
    if depth == 0:
        return scalars
    inner = _value_texts(depth - 1)
    return st.one_of(
        scalars,
        inner.map(lambda v: "-" + v),
        st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: "(" + ", ".join(xs) + ",)"),
        st.tuples(words, st.lists(_arg_texts(inner), max_size=3)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"))


@functools.cache
def _entries(depth: int) -> st.SearchStrategy[str]:
    keys = st.sampled_from(_schema_keys()) | identifiers(max_size=6)
    plain = st.tuples(keys, _value_texts()).map(" ".join)
    if depth == 0:
        return plain
    block = st.lists(_entries(depth - 1), max_size=4).map(lambda es: "{ " + "\n".join(es) + " }")
    return st.one_of(
        plain,
        st.tuples(keys, block).map(" ".join),
        st.tuples(keys, _value_texts(), block).map(" ".join))


@st.composite
def entry_texts(draw) -> str:
    """A parseable .space text whose entries are random keys and values (mostly invalid)."""
    parts = []
    if draw(st.booleans()):
        parts.append(f"rule {draw(identifiers())} {{ "
                     + "\n".join(draw(st.lists(_entries(1), max_size=3))) + " }")
    if draw(st.booleans()):
        step = st.one_of(_words(), st.tuples(_words(), st.lists(_arg_texts(_value_texts(1)),
                                                                max_size=3)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"))
        parts.append(f"op {draw(identifiers())} = " + " | ".join(
            draw(st.lists(step, min_size=1, max_size=4))))
    body = "\n".join(draw(st.lists(_entries(2), max_size=6)))
    parts.append(f"space {draw(identifiers())} {{\n{body}\n}}")
    return "\n".join(draw(st.permutations(parts)))


# ---------------------------------------------------------------------------------------------
# Token soups and mutations


@functools.cache
def _terminal_samples() -> tuple[str, ...]:
    """One or more spellings of every terminal of the grammar."""
    from msrdsl.lang.syntax import _parser

    regex_samples = {
        "NAME": ["x", "sep_conv_3x3", "cell", "keep", "stable_rank", "last_conv", "alpha", "msr"],
        "INT": ["0", "1", "2", "8", "99999999999999999999"],
        "FLOAT": ["0.5", "1e-3", "3e-4", ".5", "1e999", "2.", "5E+2"],
        "STRING": ['"x"', '"msr.space"', '"\\n"', '"\\q"', '""', '"a\\"b"'],
        "COMMENT": ["# c"],
        "CELL_TYPE": ["normal", "reduce"],
        "WS": [" "],
    }
    out: list[str] = []
    for t in _parser().terminals:
        if t.name in regex_samples:
            out += regex_samples[t.name]
        elif t.pattern.type == "str":
            out.append(t.pattern.value)
        else:
            out.append(t.name.lower())
    return tuple(out)


@functools.cache
def token_soups(max_size: int = 40) -> st.SearchStrategy[str]:
    """Random sequences of the grammar's terminals, sometimes opened like a real file."""
    prefix = st.sampled_from(["", "space s {", "genotype g {", "op o = ", "rule r {",
                              "space s { cell {", "space s { select {"])
    body = st.lists(st.sampled_from(_terminal_samples()), max_size=max_size).map(" ".join)
    return st.tuples(prefix, body).map(" ".join)


_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[A-Za-z_]\w*|\d[\w.+-]*|\.\d\w*|\s+|.', re.S)


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


@st.composite
def mutations(draw, text: str, max_edits: int = 3) -> str:
    """`text` with 1 to `max_edits` token or character edits."""
    for _ in range(draw(st.integers(1, max_edits))):
        toks = _tokens(text)
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "replace",
                                     "char_delete", "char_insert", "char_replace", "truncate"]))
        if not toks:
            kind = "char_insert"
        if kind in ("delete", "duplicate", "swap", "insert", "replace"):
            i = draw(st.integers(0, len(toks) - 1))
            if kind == "delete":
                del toks[i]
            elif kind == "duplicate":
                toks.insert(i, toks[i])
            elif kind == "swap":
                j = draw(st.integers(0, len(toks) - 1))
                toks[i], toks[j] = toks[j], toks[i]
            else:
                new = draw(st.sampled_from(_terminal_samples()) | st.sampled_from(toks))
                if kind == "insert":
                    toks.insert(i, " " + new + " ")
                else:
                    toks[i] = new
            text = "".join(toks)
        elif kind == "truncate":
            text = text[:draw(st.integers(0, len(text)))]
        else:
            i = draw(st.integers(0, len(text)))
            ch = draw(st.characters(exclude_categories=("Cs",)) | st.sampled_from(
                list('{}[]()"\\#=|:,-/+.\n\t\r\x0c\x00')))
            if kind == "char_insert":
                text = text[:i] + ch + text[i:]
            elif kind == "char_delete":
                text = text[:i] + text[i + 1:]
            else:
                text = text[:i] + ch + text[i + 1:]
    return text


@st.composite
def byte_mutations(draw, data: bytes, max_edits: int = 3) -> bytes:
    """`data` with bytes deleted, inserted or flipped (often leaving invalid UTF-8)."""
    for _ in range(draw(st.integers(1, max_edits))):
        kind = draw(st.sampled_from(["delete", "insert", "flip", "truncate"]))
        i = draw(st.integers(0, len(data)))
        if kind == "delete":
            data = data[:i] + data[i + 1:]
        elif kind == "insert":
            data = data[:i] + draw(st.sampled_from([b"\xff", b"\xc3", b"\x80", b"\xed\xa0\x80",
                                                    b"\x00", b"\xe2\x80\xa8"]) | st.binary(
                min_size=1, max_size=3)) + data[i:]
        elif kind == "flip" and i < len(data):
            bit = draw(st.integers(0, 7))
            data = data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1:]
        else:
            data = data[:i]
    return data


# Python keywords are fine as names in the language; kept importable for users who want them
# out of generated identifiers (e.g. when exporting to DARTS' Python notation).
PYTHON_KEYWORDS = frozenset(keyword.kwlist)
