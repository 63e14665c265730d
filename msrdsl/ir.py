"""The intermediate representation of a .space file: frozen attrs, torch-free, located.

Every node carries `loc` (where it was written), which takes no part in equality: two spaces are
equal when they mean the same thing, wherever they came from.

The settings classes double as the schema of the language. Each field's metadata says how the
field is written (`setting` = `key value`, `block` = `key [head] { ... }`), so the parser, the
printer, `extends` and `--set` all follow one description.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from attrs import Attribute, field, fields, frozen

from msrdsl.errors import Location

# ---------------------------------------------------------------------------------------------
# Schema helpers

# A scalar written in a file: int, float, bool, str, Fraction, or a tuple of those.
Scalar = Any

MISSING = object()


def setting(default: Any, kind: str, *, choices: tuple[str, ...] = (), low: float | None = None,
            high: float | None = None, doc: str = "") -> Any:
    """A `key value` entry. `kind` is one of int, float, bool, number, str, name, names, numbers,
    fractions, score, rule."""
    meta = {"kind": kind, "choices": choices, "low": low, "high": high, "doc": doc}
    return field(default=default, metadata={"msrdsl": meta})


def block(cls: type, *, default: Any = MISSING, head: str | None = None, optional: bool = False,
          doc: str = "") -> Any:
    """A `key [head] { ... }` entry holding the settings of `cls`; `head` names the field of `cls`
    written before the braces. An optional block may be absent or switched off with `key off`."""
    meta = {"kind": "block", "cls": cls, "head": head, "optional": optional, "doc": doc}
    if default is MISSING:
        default = None if optional else cls()
    return field(default=default, metadata={"msrdsl": meta})


def schema(cls: type) -> list[Attribute]:
    """The fields of `cls` that are written in files, in canonical order."""
    return [f for f in fields(cls) if "msrdsl" in f.metadata]


def meta(attribute: Attribute) -> dict:
    return attribute.metadata["msrdsl"]


def _loc() -> Any:
    return field(default=None, eq=False, repr=False, kw_only=True)


# ---------------------------------------------------------------------------------------------
# Operators: pipelines of primitives


@frozen
class Name:
    """A bare identifier used as a value (an operator parameter like `k`, or `stride`)."""

    id: str
    loc: Location | None = _loc()


@frozen
class Call:
    """`name(positional..., key=value...)`: a primitive, an operator or a score function."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    loc: Location | None = _loc()

    def kwarg(self, key: str, default: Any = None) -> Any:
        return dict(self.kwargs).get(key, default)


@frozen
class Negate:
    """`-expr` in a score expression."""

    expr: Any
    loc: Location | None = _loc()


@frozen
class OpVariant:
    """The pipeline an operator runs at one stride (`stride is None`: at every stride)."""

    steps: tuple[Call, ...]
    stride: int | None = None
    loc: Location | None = _loc()


@frozen
class OpDef:
    """`op name(params) = step | step | ...`, or one pipeline per stride."""

    name: str
    params: tuple[str, ...]
    variants: tuple[OpVariant, ...]
    loc: Location | None = _loc()

    def variant(self, stride: int) -> OpVariant | None:
        exact = [v for v in self.variants if v.stride == stride]
        generic = [v for v in self.variants if v.stride is None]
        return (exact or generic or [None])[0]


# Primitive signatures: parameter names in positional order, with defaults. `stride` defaults to
# 1, not to the edge's stride: a pipeline says where it strides, so that a separable convolution
# strides in its first depthwise convolution only.
PRIMITIVES: dict[str, tuple[tuple[str, Any], ...]] = {
    "relu": (),
    "conv": (("kernel", MISSING), ("stride", 1), ("dilation", 1), ("groups", 1)),
    "dwconv": (("kernel", MISSING), ("stride", 1), ("dilation", 1)),
    "pwconv": (("stride", 1),),
    "bn": (),
    "search_bn": (),
    "max_pool": (("kernel", MISSING), ("stride", 1)),
    "avg_pool": (("kernel", MISSING), ("stride", 1)),
    "identity": (),
    "zero": (("stride", 1),),
    "factorized_reduce": (),
}

PRIMITIVE_DOCS: dict[str, str] = {
    "relu": "ReLU (not in place)",
    "conv": "convolution C->C, 'same' padding dilation*(k-1)/2, no bias",
    "dwconv": "depthwise convolution (groups = channels), 'same' padding, no bias",
    "pwconv": "pointwise 1x1 convolution C->C, no bias",
    "bn": "batch norm (affine in evaluation networks, affine-free in the supernet)",
    "search_bn": "affine-free batch norm present only in the supernet (DARTS puts one after pools)",
    "max_pool": "max pooling, padding k//2",
    "avg_pool": "average pooling, padding k//2, padding not counted",
    "identity": "the input unchanged",
    "zero": "zeros of the output shape (the 'none' operator)",
    "factorized_reduce": "ReLU, two offset 1x1 stride-2 convolutions concatenated, BN (halves the map)",
}

CONV_PRIMITIVES = frozenset({"conv", "dwconv", "pwconv"})


@frozen
class Primitive:
    """A primitive with every parameter resolved to numbers: what the compiler builds.

    `groups == 0` means depthwise (one group per channel). Kernel, stride and dilation are
    (height, width) pairs.
    """

    kind: str
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    @property
    def is_conv(self) -> bool:
        return self.kind in CONV_PRIMITIVES

    @property
    def padding(self) -> tuple[int, int]:
        """'Same' padding, as every DARTS operator uses."""
        if self.kind in ("max_pool", "avg_pool"):
            return (self.kernel[0] // 2, self.kernel[1] // 2)
        return tuple(d * (k - 1) // 2 for k, d in zip(self.kernel, self.dilation))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Selection rules


@frozen
class Selection:
    """`argmin SCORE` or `argmax SCORE`: how one choice is made from a score table."""

    direction: str  # "argmin" | "argmax"
    score: Any  # Call | Negate | Name
    loc: Location | None = _loc()


@frozen
class Rule:
    """`rule name { op ...  edge ...  exclude [...] }`: choose an op per edge, then keep edges
    (Eq. 6-9). `exclude` lists operators never chosen and left out of edge strengths."""

    name: str
    op: Selection
    edge: Selection
    exclude: tuple[str, ...] = ()
    loc: Location | None = _loc()


# ---------------------------------------------------------------------------------------------
# Space sections (the schema)


DATASETS = ("digits", "cifar10", "imagenet", "synthetic")


@frozen
class DatasetSpec:
    name: str = setting("digits", "name", choices=DATASETS,
                        doc="data set: digits (embedded), cifar10, imagenet, synthetic")
    root: str | None = setting(None, "str", doc="folder holding the data set")
    input_size: int | None = setting(None, "int", low=4, doc="image side in pixels")
    split: Fraction | float = setting(Fraction(4, 5), "number", low=0, high=1,
                                      doc="share of the training set that trains weights in search")
    loc: Location | None = _loc()


@frozen
class CellSpec:
    inputs: int = setting(2, "int", low=1, doc="input nodes (outputs of previous cells)")
    nodes: int = setting(4, "int", low=1, doc="intermediate nodes")
    keep: int = setting(2, "int", low=1, doc="incoming edges each node keeps (Eq. 9)")
    output: str = setting("concat", "name", choices=("concat",),
                          doc="how intermediate nodes form the output")
    loc: Location | None = _loc()

    @property
    def edges(self) -> int:
        """Mixed edges in the supernet cell: node j has inputs + j predecessors."""
        return sum(self.inputs + j for j in range(self.nodes))

    def edge_list(self) -> list[tuple[int, int]]:
        """(source, target) for every mixed edge, in DARTS order: by target node, then source."""
        return [(i, self.inputs + j) for j in range(self.nodes) for i in range(self.inputs + j)]


@frozen
class NetworkSpec:
    cells: int = setting(8, "int", low=1, doc="cells in the search network")
    channels: int = setting(16, "int", low=1, doc="initial channels C")
    stem_multiplier: int = setting(3, "int", low=1, doc="stem outputs stem_multiplier * C")
    reduce_at: tuple[Fraction | int, ...] = setting(
        (Fraction(1, 3), Fraction(2, 3)), "fractions",
        doc="reduction cells: fractions of depth or cell indices")
    loc: Location | None = _loc()

    def reduction_indices(self, cells: int | None = None) -> tuple[int, ...]:
        """Cell indices that reduce: a fraction f stands at floor(cells * f), as DARTS places them."""
        n = self.cells if cells is None else cells
        out = []
        for r in self.reduce_at:
            out.append(int(r) if isinstance(r, int) else int(Fraction(r) * n))
        return tuple(sorted(set(out)))


@frozen
class SpectralNormSpec:
    bound: float = setting(1.0, "float", low=0, doc="C: every candidate convolution's spectral norm")
    method: str = setting("power", "name", choices=("power", "exact"),
                          doc="power iteration (Algorithm 1) or exact (FFT / matrix norm)")
    power_iterations: int = setting(5, "int", low=1, doc="Z, iterations per training forward")
    loc: Location | None = _loc()


@frozen
class SupernetSpec:
    mix: Any = setting(Name("uniform"), "score",
                       doc="uniform (Eq. 2), softmax(alpha) (Eq. 1) or softmax(SCORE)")
    refresh: str = setting("epoch", "name", choices=("epoch", "step"),
                           doc="when score-based mixing weights are recomputed")
    alpha_init: float = setting(1e-3, "float", low=0, doc="std of the initial alpha")
    spectral_norm: SpectralNormSpec | None = block(SpectralNormSpec, head="bound", optional=True,
                                                   doc="the constraint of Eq. 4-5")
    loc: Location | None = _loc()


@frozen
class EpochRule:
    rule: str = setting("last", "name", choices=("last", "before_valid_loss_rises", "min_valid_loss"),
                        doc="which epoch's architecture is the result")
    patience: int = setting(3, "int", low=1,
                            doc="epochs the valid loss must stay above its minimum to count as rising")
    loc: Location | None = _loc()


@frozen
class SelectSpec:
    rule: Any = setting("msr", "rule", doc="a rule name, or op/edge/exclude written inline")
    epoch: EpochRule = block(EpochRule, head="rule", doc="epoch choice")
    record: tuple[str, ...] = setting((), "names", doc="further rules whose genotype each epoch records")
    loc: Location | None = _loc()


@frozen
class OptimizerSpec:
    kind: str = setting("sgd", "name", choices=("sgd", "adam"), doc="optimiser")
    lr: float = setting(0.025, "float", low=0, doc="learning rate")
    lr_min: float = setting(0.0, "float", low=0, doc="final learning rate of the schedule")
    schedule: str = setting("cosine", "name", choices=("cosine", "constant"), doc="lr schedule")
    momentum: float = setting(0.9, "float", low=0, high=1, doc="SGD momentum")
    betas: tuple[float, ...] = setting((0.9, 0.999), "numbers", doc="Adam betas")
    weight_decay: float = setting(3e-4, "float", low=0, doc="L2 weight decay")
    loc: Location | None = _loc()


def _arch_optimizer() -> OptimizerSpec:
    # DARTS' architecture optimiser (Liu et al. 2019): Adam 3e-4, betas (0.5, 0.999), wd 1e-3.
    return OptimizerSpec(kind="adam", lr=3e-4, lr_min=0.0, schedule="constant", momentum=0.0,
                         betas=(0.5, 0.999), weight_decay=1e-3)


@frozen
class ArchSpec:
    optimizer: OptimizerSpec = block(OptimizerSpec, default=_arch_optimizer(), head="kind",
                                     doc="architecture optimiser")
    order: str = setting("first", "name", choices=("first", "second"),
                         doc="first- or second-order (unrolled) bilevel step")
    loc: Location | None = _loc()


@frozen
class SearchSpec:
    epochs: int = setting(50, "int", low=1, doc="search epochs")
    batch: int = setting(64, "int", low=1, doc="batch size")
    seed: int = setting(2, "int", low=0, doc="random seed")
    optimizer: OptimizerSpec = block(
        OptimizerSpec, default=OptimizerSpec(lr_min=0.001), head="kind", doc="weight optimiser")
    grad_clip: float = setting(5.0, "float", low=0, doc="gradient norm clip (0: none)")
    augment: bool = setting(False, "bool", doc="crop and flip during search")
    arch: ArchSpec = block(ArchSpec, head=None, doc="architecture optimisation (alpha mixing only)")
    loc: Location | None = _loc()


@frozen
class EvaluateSpec:
    net: str = setting("cifar", "name", choices=("cifar", "imagenet"), doc="network macro style")
    dataset: DatasetSpec | None = block(DatasetSpec, head="name", optional=True,
                                        doc="evaluation data set (default: the search data set)")
    cells: int = setting(20, "int", low=1, doc="cells")
    channels: int = setting(36, "int", low=1, doc="initial channels")
    epochs: int = setting(600, "int", low=1, doc="training epochs")
    batch: int = setting(96, "int", low=1, doc="batch size")
    seed: int = setting(0, "int", low=0, doc="random seed")
    optimizer: OptimizerSpec = block(OptimizerSpec, head="kind", doc="optimiser")
    grad_clip: float = setting(5.0, "float", low=0, doc="gradient norm clip (0: none)")
    cutout: int = setting(16, "int", low=0, doc="cutout side in pixels (0: none)")
    drop_path: float = setting(0.3, "float", low=0, high=1, doc="final drop-path probability")
    auxiliary: float = setting(0.4, "float", low=0, doc="auxiliary tower loss weight (0: none)")
    label_smoothing: float = setting(0.0, "float", low=0, high=1, doc="label smoothing")
    warmup: int = setting(0, "int", low=0, doc="epochs of linear lr warm-up")
    loc: Location | None = _loc()


@frozen
class Space:
    """A whole method: everything a `space NAME { ... }` block says, with the operator library
    and the rules it can name already resolved (prelude, its own file, its `extends` chain)."""

    name: str
    dataset: DatasetSpec = block(DatasetSpec, head="name")
    operators: tuple[str, ...] = setting(
        ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"), "names",
        doc="the candidate operators on every mixed edge")
    cell: CellSpec = block(CellSpec)
    network: NetworkSpec = block(NetworkSpec)
    supernet: SupernetSpec = block(SupernetSpec)
    select: SelectSpec = block(SelectSpec, head="rule")
    search: SearchSpec = block(SearchSpec)
    evaluate: EvaluateSpec = block(EvaluateSpec)
    ops: tuple[OpDef, ...] = field(default=(), repr=False)
    rules: tuple[Rule, ...] = field(default=(), repr=False)
    extends: str | None = field(default=None, eq=False)
    # Where each setting was written ("cell.keep" -> its value's span), for located errors.
    locs: dict[str, Location] = field(factory=dict, eq=False, repr=False, hash=False)
    # The operators and rules defined in the user's files rather than the prelude.
    user_ops: tuple[str, ...] = field(default=(), eq=False, repr=False)
    user_rules: tuple[str, ...] = field(default=(), eq=False, repr=False)
    loc: Location | None = _loc()

    def where(self, path: str) -> Location | None:
        """The location of setting `path` (e.g. "cell.keep"), or of its nearest written parent."""
        while path:
            if path in self.locs:
                return self.locs[path]
            path = path.rpartition(".")[0]
        return self.loc

    def op(self, name: str) -> OpDef:
        return {o.name: o for o in self.ops}[name]

    def rule(self, name: str) -> Rule:
        return {r.name: r for r in self.rules}[name]

    @property
    def selected_rule(self) -> Rule:
        rule = self.select.rule
        return rule if isinstance(rule, Rule) else self.rule(rule)
