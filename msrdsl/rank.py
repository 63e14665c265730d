"""Spectral norm, Frobenius norm and stable rank of a 2-D convolution as a linear operator.

MSR-DARTS (Machida et al.) scores an operator by the stable rank R(c) = ||c||_F^2 / ||c||_2^2 of
its last convolution c, where c is the linear map from a (C_in, h, w) feature map to the
(C_out, h/s_h, w/s_w) output. The exact singular values come from Sedghi et al., "The singular
values of convolutional layers" (Thm 6): with circular padding the operator is block diagonal in
the 2-D Fourier basis, one C_out x C_in block K(f) per frequency f.

The operator scored here ("circular operator") is, for x of shape (C_in, h, w):

    y[o, m, n] = sum_{c,i,j} W[o, c, i, j]
                 x[c, (m s_h + i d_h - p_h) mod h, (n s_w + j d_w - p_w) mod w]

with p = d (k - 1) // 2 per axis, i.e. the "same" zero-padding placement made circular, and the
stride keeping output positions 0, s, 2s, ... . Grouped convolutions are block diagonal over
groups. Shifting the kernel multiplies the operator by a permutation of the input, so the
singular values do not depend on the placement; it is fixed only so that the operator is one
definite matrix.

Stride (polyphase / aliasing, derived here): let N = h, M = N / s. Subsampling a length-N signal
y to z[n] = y[n s] aliases its DFT: Z(g) = (1/s) sum_{a<s} Y(g + a M). With unitary DFTs
(X^ = X / sqrt(N), Z^ = Z / sqrt(M)) and Y(f) = K(f) X(f) this is

    Z^(g) = s^{-1/2} sum_{a<s} K(g + a M) X^(g + a M),

and the input frequencies {g + a M} partition 0..N-1 as g runs over 0..M-1. So the operator is
unitarily equivalent to a block-diagonal matrix with, at each of the (h/s_h)(w/s_w) output
frequencies g, the C_out x (C_in s_h s_w) block

    B(g) = (s_h s_w)^{-1/2} [K(g + a M) for a over the s_h x s_w aliases].

When s does not divide the map size the positions 0, s, 2s, ... do not close up around the torus,
the operator is not block diagonal in any Fourier basis, and a SpaceError is raised.

`power_iteration` is Algorithm 1 of MSR-DARTS; it estimates the norm of the ZERO-padded operator
(torch's conv2d with its real padding), which differs from the circular one near the borders; the
two agree closely on large maps.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from attrs import field, frozen
from torch import Tensor

from msrdsl.errors import SpaceError

Pair = tuple[int, int]


class OperatorNorms(NamedTuple):
    """Norms of a convolution operator; each field has shape () or (B,)."""

    spectral: Tensor
    frobenius: Tensor
    stable_rank: Tensor


def _as_int(value: object, what: str) -> int:
    """`value` as a plain int, or a SpaceError naming `what`."""
    if isinstance(value, bool):
        raise SpaceError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise SpaceError(f"{what} must be an integer, got {value!r}") from None


def _pair_of(what: str, minimum: int = 1) -> Callable[[object], Pair]:
    """A converter taking an int or a pair of ints to a validated pair."""

    def convert(value: object) -> Pair:
        items = value if isinstance(value, (tuple, list, torch.Size)) else (value, value)
        if len(items) != 2:
            raise SpaceError(f"{what} must be an integer or a pair of integers, got {value!r}")
        pair = (_as_int(items[0], what), _as_int(items[1], what))
        if min(pair) < minimum:
            raise SpaceError(f"{what} must be at least {minimum}, got {value!r}")
        return pair

    return convert


def _weight_shape(value: object) -> tuple[int, int, int, int]:
    """A (C_out, C_in/groups, kh, kw) shape with positive sizes."""
    items = tuple(value) if isinstance(value, (tuple, list, torch.Size)) else (value,)
    if len(items) != 4:
        raise SpaceError(
            f"a convolution weight has shape (C_out, C_in/groups, kh, kw), got {items!r}"
        )
    shape = tuple(_as_int(v, "a weight dimension") for v in items)
    if min(shape) < 1:
        raise SpaceError(f"a convolution weight needs non-empty dimensions, got {shape!r}")
    return shape  # type: ignore[return-value]


@frozen
class ConvSpec:
    """One convolution to score: its weight shape, input map size, stride, dilation and groups."""

    weight_shape: tuple[int, int, int, int] = field(converter=_weight_shape)
    input_hw: Pair = field(converter=_pair_of("input_hw"))
    stride: Pair = field(default=(1, 1), converter=_pair_of("stride"))
    dilation: Pair = field(default=(1, 1), converter=_pair_of("dilation"))
    groups: int = field(default=1, converter=lambda g: _as_int(g, "groups"))

    def __attrs_post_init__(self) -> None:
        c_out = self.weight_shape[0]
        if self.groups < 1 or c_out % self.groups:
            raise SpaceError(
                f"groups={self.groups} must be positive and divide C_out={c_out} "
                f"(weight shape {self.weight_shape})"
            )
        for axis, n, s in zip("hw", self.input_hw, self.stride, strict=True):
            if n % s:
                side = "height" if axis == "h" else "width"
                raise SpaceError(
                    f"stride {s} does not divide the feature-map {side} {n}: "
                    "the strided circular operator is then not block diagonal in the Fourier basis "
                    "and its singular values cannot be computed exactly by this method",
                    hint="use a feature-map size that is a multiple of the stride",
                )

    @classmethod
    def of(
        cls, weight: Tensor, input_hw: object, *, stride: object = (1, 1),
        dilation: object = (1, 1), groups: int = 1,
    ) -> ConvSpec:
        """The spec of `weight` (C_out, C_in/groups, kh, kw) applied to an input_hw map."""
        return cls(tuple(weight.shape[-4:]), input_hw, stride, dilation, groups)

    @property
    def out_hw(self) -> Pair:
        return (self.input_hw[0] // self.stride[0], self.input_hw[1] // self.stride[1])

    @property
    def in_channels(self) -> int:
        return self.weight_shape[1] * self.groups


def _real_dtype(weight: Tensor) -> torch.dtype:
    """The dtype the spectra are computed in: the weight's, with half precisions upcast."""
    if weight.is_complex() or not weight.is_floating_point():
        raise SpaceError(f"a convolution weight must be a real floating tensor, got {weight.dtype}")
    if weight.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return weight.dtype


def _prepare(
    weight: Tensor, input_hw: object, stride: object, dilation: object, groups: int
) -> tuple[Tensor, ConvSpec, bool]:
    """The weight as (B, C_out, C_in/groups, kh, kw), its spec, and whether it came batched."""
    if not isinstance(weight, Tensor) or weight.dim() not in (4, 5):
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise SpaceError(
            "a convolution weight has shape (C_out, C_in/groups, kh, kw) or "
            f"(B, C_out, C_in/groups, kh, kw), got {shape}"
        )
    spec = ConvSpec.of(weight, input_hw, stride=stride, dilation=dilation, groups=groups)
    batched = weight.dim() == 5
    w = weight if batched else weight.unsqueeze(0)
    return w.to(_real_dtype(weight)), spec, batched


def _alias_phases(n: int, s: int, k: int, d: int, freqs: Tensor) -> Tensor:
    """(F*s, k) DFT factors s^-1/2 e^{-2 pi i f t_i/n} of tap i at aliases f = g + a n/s (B(g))."""
    # Tap i sits at circular offset t_i = p - i d of the zero-padded kernel (see module docstring).
    taps = d * (k - 1) // 2 - d * torch.arange(k, device=freqs.device)  # (k,)
    aliases = freqs[:, None] + (n // s) * torch.arange(s, device=freqs.device)  # (F, s)
    # Integer phase first, reduced mod n, so that large maps lose no accuracy in the angle; taps
    # that wrap past the map (extent > n) land on the right frequency and add up as in the dense
    # operator.
    turns = (aliases[:, :, None] * taps) % n  # (F, s, k)
    angle = turns.to(torch.float64) * (-2.0 * math.pi / n)
    return torch.polar(torch.full_like(angle, s**-0.5), angle).reshape(-1, k)


def _onesided(m: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Frequencies 0..m//2 and how many of the m each stands for, as K(-f) = conj K(f)."""
    freqs = torch.arange(m // 2 + 1, device=device)
    mult = torch.full_like(freqs, 2)
    mult[0] = 1
    if m % 2 == 0:
        mult[-1] = 1
    return freqs, mult


def _spectral_blocks(weight: Tensor, spec: ConvSpec) -> tuple[Tensor, Tensor]:
    """Blocks B(g) (Sedghi Thm 6, polyphase stride) and how many frequencies each stands for."""
    # weight: (B, C_out, C_in/groups, kh, kw) -> blocks (B, G, F, C_out/G, C_in/G * s_h s_w)
    b, c_out, cin_g, kh, kw = weight.shape
    g, o = spec.groups, c_out // spec.groups
    (h, w), (sh, sw), (dh, dw) = spec.input_hw, spec.stride, spec.dilation
    mh, mw = spec.out_hw
    per_group = weight.reshape(b, g, o, cin_g, kh, kw)
    if kh == kw == 1:
        # K(f) = W at every frequency, so every B(g) is the same real matrix: one block stands
        # for all mh*mw frequencies and no complex arithmetic is needed.
        block = per_group[..., 0, 0, None].expand(b, g, o, cin_g, sh * sw)
        block = block.reshape(b, g, 1, o, cin_g * sh * sw)
        if sh * sw > 1:
            block = block * (sh * sw) ** -0.5
        return block, torch.tensor([mh * mw], device=weight.device)
    freqs_w, mult_w = _onesided(mw, weight.device)
    fw = freqs_w.numel()
    phase_h = _alias_phases(h, sh, kh, dh, torch.arange(mh, device=weight.device))  # (mh*sh, kh)
    phase_w = _alias_phases(w, sw, kw, dw, freqs_w)  # (fw*sw, kw)
    # F' = mh*sh*fw*sw input frequencies, ordered (g_h, a_h, g_w, a_w).
    dft = (phase_h[:, None, :, None] * phase_w[None, :, None, :]).reshape(-1, kh * kw)  # (F', k)
    # One real GEMM (all conv taps x all frequencies, real and imaginary parts interleaved): the
    # kernel is tiny, so this beats an FFT of the kernel zero-padded to h x w, and it computes
    # only the frequencies needed.
    dft = torch.view_as_real(dft).permute(1, 0, 2).reshape(kh * kw, -1)  # (k, 2F')
    k = per_group.reshape(-1, kh * kw) @ dft.to(weight.dtype)  # (B*G*o*c, 2F')
    k = k.reshape(b, g, o, cin_g, mh, sh, fw, sw, 2)
    # One copy into block layout; free for depthwise stride 1 (o = c = s = 1).
    k = k.permute(0, 1, 4, 6, 2, 3, 5, 7, 8).contiguous()  # (B, G, mh, fw, o, c, sh, sw, 2)
    blocks = torch.view_as_complex(k).reshape(b, g, mh * fw, o, cin_g * sh * sw)
    return blocks, mult_w.repeat(mh)


def _is_vector(blocks: Tensor) -> bool:
    return blocks.shape[-1] == 1 or blocks.shape[-2] == 1


def _block_singular_values(blocks: Tensor) -> Tensor:
    """All singular values of each block (Sedghi Thm 6): (..., o, n) -> (..., min(o, n))."""
    if _is_vector(blocks):
        # Depthwise: a 1 x n or n x 1 block has one singular value, its Euclidean norm.
        return torch.linalg.vector_norm(blocks, dim=(-2, -1)).unsqueeze(-1)
    return torch.linalg.svdvals(blocks)


def _squared_norms(blocks: Tensor) -> Tensor:
    """Squared Frobenius norm of each block: (..., o, n) -> (...)."""
    # A real view avoids complex abs, whose sqrt would only be squared again.
    parts = torch.view_as_real(blocks) if blocks.is_complex() else blocks.unsqueeze(-1)
    return parts.square().sum(dim=(-3, -2, -1))


def _block_spectral_norms_sq(blocks: Tensor, squared_norms: Tensor) -> Tensor:
    """Squared largest singular value of each block: (..., o, n) -> (...)."""
    if _is_vector(blocks):
        # Depthwise: a rank-one block's only singular value is its Frobenius norm.
        return squared_norms
    # lambda_max of the smaller Gram matrix has relative error ~eps (Weyl), so sigma_max is as
    # accurate as from an SVD, and a Hermitian eigensolver is usually faster than svdvals.
    gram = blocks @ blocks.mH if blocks.shape[-2] <= blocks.shape[-1] else blocks.mH @ blocks
    return torch.linalg.eigvalsh(gram)[..., -1].clamp_min(0)


# Block entries materialised at once when scoring a batch: bounds the peak memory of the
# frequency-domain blocks (about 128 MiB in complex64) whatever the batch size.
_CHUNK_ENTRIES = 1 << 24


def _block_entries(spec: ConvSpec) -> int:
    """Number of complex block entries one convolution of `spec` expands to."""
    c_out, cin_g, kh, kw = spec.weight_shape
    sh, sw = spec.stride
    if kh == kw == 1:
        return c_out * cin_g * sh * sw
    mh, mw = spec.out_hw
    return c_out * cin_g * mh * sh * (mw // 2 + 1) * sw


def _norms(weight: Tensor, spec: ConvSpec) -> OperatorNorms:
    """Spectral norm, Frobenius norm and stable rank R = ||c||_F^2 / ||c||_2^2, each (B,)."""
    step = max(1, _CHUNK_ENTRIES // _block_entries(spec))
    if weight.shape[0] <= step:
        return _norms_of_chunk(weight, spec)
    parts = [_norms_of_chunk(chunk, spec) for chunk in weight.split(step)]
    return OperatorNorms(*(torch.cat(field) for field in zip(*parts, strict=True)))


def _norms_of_chunk(weight: Tensor, spec: ConvSpec) -> OperatorNorms:
    """`_norms` for a batch small enough to expand at once."""
    blocks, mult = _spectral_blocks(weight, spec)  # (B, G, F, o, n), (F,)
    energy = _squared_norms(blocks)  # (B, G, F)
    spectral_sq = _block_spectral_norms_sq(blocks, energy).flatten(1).amax(dim=1)  # (B,)
    # Parseval: sum sigma^2 over the whole operator = sum of squared block entries, each block
    # counted once per frequency it stands for.
    frob_sq = (energy * mult.to(energy.dtype)).flatten(1).sum(dim=1)  # (B,)
    # 0/0 = nan for the zero operator: its stable rank is undefined, not 0 or 1.
    return OperatorNorms(spectral_sq.sqrt(), frob_sq.sqrt(), frob_sq / spectral_sq)


def _unbatch(norms: OperatorNorms, batched: bool) -> OperatorNorms:
    return norms if batched else OperatorNorms(*(t[0] for t in norms))


def conv_singular_values(
    weight: Tensor, input_hw: object, *, stride: object = (1, 1),
    dilation: object = (1, 1), groups: int = 1,
) -> Tensor:
    """All singular values of the circular conv operator (Sedghi Thm 6), descending: (n,) or (B, n).

    n = min(C_out (h/s_h)(w/s_w), C_in h w), the size of the dense operator's spectrum.
    """
    w, spec, batched = _prepare(weight, input_hw, stride, dilation, groups)
    blocks, mult = _spectral_blocks(w, spec)
    sv = _block_singular_values(blocks)  # (B, G, F, r)
    sv = sv.repeat_interleave(mult, dim=2).flatten(1)  # (B, n)
    sv = sv.sort(dim=1, descending=True).values
    return sv if batched else sv[0]


def operator_norms(
    weight: Tensor, input_hw: object, *, stride: object = (1, 1),
    dilation: object = (1, 1), groups: int = 1,
) -> OperatorNorms:
    """Spectral and Frobenius norm and stable rank R(c) = ||c||_F^2 / ||c||_2^2 of the operator."""
    w, spec, batched = _prepare(weight, input_hw, stride, dilation, groups)
    return _unbatch(_norms(w, spec), batched)


def stable_rank(weight: Tensor, input_hw: object, **kw: object) -> Tensor:
    """MSR-DARTS stable rank R(c) = ||c||_F^2 / ||c||_2^2 of the circular conv operator."""
    return operator_norms(weight, input_hw, **kw).stable_rank  # type: ignore[arg-type]


def spectral_norm(weight: Tensor, input_hw: object, **kw: object) -> Tensor:
    """Largest singular value ||c||_2 of the circular conv operator."""
    return operator_norms(weight, input_hw, **kw).spectral  # type: ignore[arg-type]


def frobenius_norm(weight: Tensor, input_hw: object, **kw: object) -> Tensor:
    """Frobenius norm ||c||_F = sqrt(sum sigma^2) of the circular conv operator."""
    return operator_norms(weight, input_hw, **kw).frobenius  # type: ignore[arg-type]


def batched_operator_norms(
    weights: Sequence[Tensor], specs: Sequence[ConvSpec]
) -> OperatorNorms:
    """`operator_norms` of many convolutions, one vectorised call per distinct spec, in input order.

    Convolutions with equal specs are stacked and scored together; a very large group is split
    into chunks only to bound memory (see `_CHUNK_ENTRIES`).
    """
    if len(weights) != len(specs):
        raise SpaceError(f"got {len(weights)} weights but {len(specs)} specs")
    if not specs:
        empty = torch.empty(0)
        return OperatorNorms(empty, empty, empty)
    by_spec: dict[ConvSpec, list[int]] = {}
    for i, (weight, spec) in enumerate(zip(weights, specs, strict=True)):
        if not isinstance(spec, ConvSpec):
            raise SpaceError(f"spec {i} is a {type(spec).__name__}, not a ConvSpec")
        if tuple(weight.shape) != spec.weight_shape:
            raise SpaceError(
                f"weight {i} has shape {tuple(weight.shape)} but its spec says {spec.weight_shape}"
            )
        by_spec.setdefault(spec, []).append(i)
    order: list[int] = []
    parts: list[OperatorNorms] = []
    for spec, indices in by_spec.items():
        stacked = torch.stack([weights[i] for i in indices])  # (B, C_out, C_in/groups, kh, kw)
        parts.append(_norms(stacked.to(_real_dtype(stacked)), spec))
        order.extend(indices)
    # Concatenate in group order, then undo the grouping with the inverse permutation.
    device = parts[0].spectral.device
    inverse = torch.empty(len(order), dtype=torch.long, device=device)
    inverse[torch.tensor(order, device=device)] = torch.arange(len(order), device=device)
    dtype = parts[0].spectral.dtype
    for part in parts[1:]:
        dtype = torch.promote_types(dtype, part.spectral.dtype)
    return OperatorNorms(
        *(torch.cat([p[f].to(dtype) for p in parts])[inverse] for f in range(3))
    )


def _conv_output_size(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def power_iteration(
    weight: Tensor,
    input_shape: Sequence[int],
    *,
    stride: object = (1, 1),
    padding: object = (0, 0),
    dilation: object = (1, 1),
    groups: int = 1,
    iterations: int = 5,
    u: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """MSR-DARTS Algorithm 1: power-iteration estimate of the ZERO-padded conv operator's norm.

    Returns (sigma, u): sigma of shape () (or (B,) for a (B, C_out, C_in/groups, kh, kw) weight)
    and the final unit input vector u of shape (1, C_in, h, w) (or (B, C_in, h, w)) to pass back
    as `u` for a warm start. The iterations run without autograd; sigma = ||conv(u)|| is then
    computed with it, so sigma is differentiable in the weight with u held fixed.
    """
    if not isinstance(weight, Tensor) or weight.dim() not in (4, 5):
        raise SpaceError("power_iteration needs a 4-D or 5-D convolution weight")
    dtype = _real_dtype(weight)
    batched = weight.dim() == 5
    w = (weight if batched else weight.unsqueeze(0)).to(dtype)  # (B, C_out, C_in/groups, kh, kw)
    b, c_out, cin_g, kh, kw = w.shape
    if len(input_shape) != 3:
        raise SpaceError(f"input_shape must be (C_in, h, w), got {tuple(input_shape)!r}")
    c_in = _as_int(input_shape[0], "C_in")
    hw = _pair_of("input size")(tuple(input_shape[1:]))
    # Validates groups and dilation; the zero-padded operator needs no stride divisibility.
    spec = ConvSpec((c_out, cin_g, kh, kw), hw, (1, 1), dilation, groups)
    st = _pair_of("stride")(stride)
    pad = _pair_of("padding", minimum=0)(padding)
    dil = spec.dilation
    if c_in != cin_g * groups:
        raise SpaceError(
            f"input has {c_in} channels but the weight expects "
            f"C_in/groups * groups = {cin_g * groups}"
        )
    out_hw = tuple(
        _conv_output_size(n, k, s, p, d)
        for n, k, s, p, d in zip(hw, (kh, kw), st, pad, dil, strict=True)
    )
    if min(out_hw) < 1:
        raise SpaceError(f"the convolution leaves no output on a {hw[0]}x{hw[1]} map")
    # Adjoint of a strided conv: output_padding restores the input rows the stride dropped.
    extra = tuple(
        n + 2 * p - d * (k - 1) - 1 - (o - 1) * s
        for n, k, s, p, d, o in zip(hw, (kh, kw), st, pad, dil, out_hw, strict=True)
    )
    iterations = _as_int(iterations, "iterations")
    if iterations < 0:
        raise SpaceError(f"iterations must be non-negative, got {iterations}")

    # All B convolutions as one grouped conv: the batch becomes B*groups channel groups.
    flat = w.reshape(b * c_out, cin_g, kh, kw)

    def apply(x: Tensor, kernel: Tensor) -> Tensor:
        # x: (B, C_in, h, w) -> (B, C_out, oh, ow)
        y = F.conv2d(x.reshape(1, b * c_in, *hw), kernel, stride=st, padding=pad,
                     dilation=dil, groups=b * groups)
        return y.reshape(b, c_out, *out_hw)

    def adjoint(y: Tensor, kernel: Tensor) -> Tensor:
        # y: (B, C_out, oh, ow) -> (B, C_in, h, w)
        x = F.conv_transpose2d(
            y.reshape(1, b * c_out, *out_hw), kernel, stride=st, padding=pad,
            output_padding=extra, groups=b * groups, dilation=dil,
        )
        return x.reshape(b, c_in, *hw)

    shape = (b, c_in, *hw)
    if u is None:
        u = torch.randn(shape, generator=generator, dtype=dtype, device=w.device)
    elif tuple(u.shape) != shape:
        raise SpaceError(f"u must have shape {shape}, got {tuple(u.shape)}")
    with torch.no_grad():
        kernel = flat.detach()
        u = _normalise(u.detach().to(w.device, dtype))
        for _ in range(iterations):
            v = _normalise(apply(u, kernel))
            u = _normalise(adjoint(v, kernel))
    sigma = torch.linalg.vector_norm(apply(u, flat).flatten(1), dim=1)  # (B,)
    return (sigma if batched else sigma[0]), u


def _normalise(x: Tensor) -> Tensor:
    """x scaled to unit Euclidean norm per batch element; the zero vector stays zero."""
    norm = torch.linalg.vector_norm(x.flatten(1), dim=1).clamp_min(torch.finfo(x.dtype).tiny)
    return x / norm.reshape(-1, *([1] * (x.dim() - 1)))
