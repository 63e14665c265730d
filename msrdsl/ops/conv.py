"""The convolution every operator uses: 'same' padding, no bias, and a faster CPU formulation of
dilated convolutions that computes exactly the same function.

oneDNN (torch's CPU convolution backend) has fast depthwise kernels only for undilated
convolutions; the backward pass of a dilated depthwise conv falls back to a generic kernel that
is 5-10x slower. A 'same' conv with dilation d equals undilated convs on the d x d phases of the
input (the space-to-batch identity), and with stride d an undilated conv on x[::d, ::d]; both
run on the fast kernels. Measured on the search supernet (benchmarks/supernet_step.py).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

Pair = tuple[int, int]


class Conv(nn.Conv2d):
    """A bias-free conv with 'same' padding d*(k-1)/2; dilated convs run as phases on CPU."""

    def __init__(self, c_in: int, c_out: int, kernel: Pair, stride: Pair = (1, 1),
                 dilation: Pair = (1, 1), groups: int = 1):
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
        super().__init__(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=False)
        self.phases = phase_plan(kernel, stride, dilation)
        # A strided 1x1 conv reads x[::s, ::s]. On CPU it runs as exactly that: oneDNN's weight
        # gradient of a strided 1x1 conv on a channels-last input with fewer than 8 channels
        # corrupts the heap (torch 2.14, seen in FactorizedReduce on tiny supernets).
        self.subsample = stride if kernel == (1, 1) and stride != (1, 1) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            if self.phases is not None:
                return phase_conv(x, self.weight, self.phases, self.groups)
            if self.subsample is not None:
                sh, sw = self.subsample
                return F.conv2d(x[:, :, ::sh, ::sw], self.weight, groups=self.groups)
            if self.stride == (1, 1) and self.dilation == (1, 1):
                return same_conv(x, self.weight, self.padding, self.groups)
        return super().forward(x)

    def on_phases(self, x: torch.Tensor) -> torch.Tensor:
        """This conv on an input already split into its phases (see Operator.on_phases)."""
        if self.phases is None:  # pixelwise: a 1x1 conv
            return F.conv2d(x, self.weight, groups=self.groups)
        return same_conv(x, self.weight, self.phases[2], self.groups)


def phase_plan(kernel: Pair, stride: Pair, dilation: Pair) -> tuple[Pair, Pair, Pair] | None:
    """(subsample, phases, padding) per axis when a dilated 'same' conv can run undilated, else None.

    Per axis with dilation d > 1: stride 1 splits the axis into d phases; stride d keeps every d-th
    input (x[s*m + d*i - p] = x[d*(m + i - (k-1)/2)]). Other stride/dilation pairs keep the plain conv.
    """
    if dilation == (1, 1) or any(k % 2 == 0 for k in kernel):
        return None
    sub, phases = [1, 1], [1, 1]
    for axis, (s, d) in enumerate(zip(stride, dilation)):
        if d == 1 and s == 1:
            continue
        if d == 1 or (s != 1 and s != d):
            return None
        if s == d:
            sub[axis] = d
        else:
            phases[axis] = d
    padding = ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2)
    return (sub[0], sub[1]), (phases[0], phases[1]), padding


def phase_conv(x: torch.Tensor, weight: torch.Tensor, plan: tuple[Pair, Pair, Pair],
               groups: int) -> torch.Tensor:
    """A dilated 'same' conv as an undilated one on subsampled / phase-split inputs (exact)."""
    (sh, sw), (fh, fw), padding = plan
    if sh > 1 or sw > 1:
        x = x[:, :, ::sh, ::sw]
    if fh == 1 and fw == 1:
        return same_conv(x, weight, padding, groups)
    b, _, h, w = x.shape
    ph, pw = -h % fh, -w % fw
    if ph or pw:  # zeros past the border are what the dilated conv's padding reads there anyway
        x = F.pad(x, (0, pw, 0, ph))
    y = same_conv(space_to_batch(x, fh, fw), weight, padding, groups)
    y = batch_to_space(y, fh, fw, b)  # (B, C_out, H+ph, W+pw)
    return y[:, :, :h, :w] if (ph or pw) else y


def same_conv(x: torch.Tensor, weight: torch.Tensor, padding: Pair, groups: int) -> torch.Tensor:
    """A stride-1 undilated conv; on CPU a depthwise kernel wider than 3 gets its weight gradient
    from 3-wide blocks. oneDNN's fast depthwise weight-gradient kernel takes kernels at most 3
    wide; wider ones fall back to a generic kernel, 2-4x slower (the 5x5 convs of sep_conv_5x5
    and dil_conv_5x5 were a quarter of a search step)."""
    if (x.device.type == "cpu" and weight.requires_grad and weight.shape[1] == 1
            and groups == weight.shape[0] and weight.shape[-1] > 3):
        return _BlockwiseDepthwise.apply(x, weight, padding)
    return F.conv2d(x, weight, padding=padding, groups=groups)


class _BlockwiseDepthwise(torch.autograd.Function):
    """Depthwise 'same' conv; backward: input gradient as usual, weight gradient by blocks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, padding: Pair) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, padding=padding, groups=weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        # Under autocast the conv ran in the gradient's (lower) precision: so does its backward.
        xs, ws = x.to(grad.dtype), weight.to(grad.dtype)
        c, pad = weight.shape[0], ctx.padding
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, xs, ws, None, (1, 1), pad, (1, 1), False, (0, 0), c,
                (True, False, False))[0].to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_w = _blockwise_weight_grad(grad, xs, ws, pad).to(weight.dtype)
        return grad_x, grad_w, None


def _blockwise_weight_grad(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                           pad: Pair) -> torch.Tensor:
    """dL/dW of a depthwise conv. W[c, i, j] pairs grad[h, w] with x[h + i - p, w + j - p], so
    the taps of the block at (a, b) are a small conv's weight gradient on x shifted by (a, b):
    full-height 3-wide columns, or 3x3 blocks when the kernel covers the whole map (there the
    generic kernel is slowest and column windows are mostly padding)."""
    c, _, kh, kw = weight.shape
    h, w = x.shape[-2:]
    bh = 3 if (h <= kh and w <= kw) else kh
    out = weight.new_zeros(c, 1, -(-kh // bh) * bh, -(-kw // 3) * 3)
    probe = weight.new_empty(c, 1, bh, 3)
    for a in range(0, kh, bh):
        for b in range(0, kw, 3):
            window = F.pad(x, (pad[1] - b, b + 2 - pad[1], pad[0] - a, a + bh - 1 - pad[0]))
            out[:, :, a:a + bh, b:b + 3] = torch.ops.aten.convolution_backward(
                grad, window.contiguous(memory_format=torch.channels_last), probe, None, (1, 1),
                (0, 0), (1, 1), False, (0, 0), c, (False, True, False))[1]
    return out[:, :, :kh, :kw]


def phase_conv_adjoint(y: torch.Tensor, weight: torch.Tensor, plan: tuple[Pair, Pair, Pair],
                       groups: int, input_hw: Pair) -> torch.Tensor:
    """The adjoint (transpose) of `phase_conv` on an input of size `input_hw`, used by the power
    iteration of the spectral-norm constraint: each step of phase_conv reversed."""
    (sh, sw), (fh, fw), padding = plan
    h, w = -(-input_hw[0] // sh), -(-input_hw[1] // sw)  # the subsampled input's size
    if fh == 1 and fw == 1:
        x = F.conv_transpose2d(y, weight, padding=padding, groups=groups)
    else:
        b = y.shape[0]
        ph, pw = -h % fh, -w % fw
        if ph or pw:
            y = F.pad(y, (0, pw, 0, ph))
        x = F.conv_transpose2d(space_to_batch(y, fh, fw), weight, padding=padding, groups=groups)
        x = batch_to_space(x, fh, fw, b)[:, :, :h, :w]
    if sh == 1 and sw == 1:
        return x
    out = x.new_zeros(x.shape[0], x.shape[1], *input_hw)
    out[:, :, ::sh, ::sw] = x
    return out


def space_to_batch(x: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
    """(B, C, H, W) -> (fh*fw*B, C, H/fh, W/fw): phase (a, b) holds x[:, :, a::fh, b::fw]."""
    b, c, h, w = x.shape
    # Work on the NHWC view so that a channels-last tensor is copied once, in C-long runs.
    t = x.permute(0, 2, 3, 1).reshape(b, h // fh, fh, w // fw, fw, c)
    t = t.permute(2, 4, 0, 1, 3, 5).reshape(fh * fw * b, h // fh, w // fw, c)
    return t.permute(0, 3, 1, 2)


def batch_to_space(y: torch.Tensor, fh: int, fw: int, b: int) -> torch.Tensor:
    """The inverse of space_to_batch: (fh*fw*B, C, h, w) -> (B, C, h*fh, w*fw)."""
    _, c, h, w = y.shape
    t = y.permute(0, 2, 3, 1).reshape(fh, fw, b, h, w, c)
    t = t.permute(2, 3, 0, 4, 1, 5).reshape(b, h * fh, w * fw, c)
    return t.permute(0, 3, 1, 2)
