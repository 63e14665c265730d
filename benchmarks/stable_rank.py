"""Time stable-rank scoring of the MSR-DARTS supernet's last convolutions; print one JSON object.

8 cells x 14 edges x 4 operators (sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5) = 448
last convolutions, each a 1x1 pointwise C -> C conv; reduction cells are scored at their output
resolution. A second timing scores a depthwise last conv (k x k, groups=C) per operator instead.
"""

from __future__ import annotations

import json
import os
import statistics
import time

# Many tiny LAPACK calls make OpenMP's default spin-waiting pathological when other processes
# share the cores (measured 3-10x slower on a loaded 2-core box); must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from msrdsl.rank import ConvSpec, batched_operator_norms, operator_norms

# (channels, feature-map side) of each cell of the 8-cell search network.
CELLS = [(16, 32), (16, 32), (32, 16), (32, 16), (32, 16), (64, 8), (64, 8), (64, 8)]
EDGES = 14
# (kernel size, dilation) of each operator's depthwise conv.
OPERATORS = {
    "sep_conv_3x3": (3, 1),
    "sep_conv_5x5": (5, 1),
    "dil_conv_3x3": (3, 2),
    "dil_conv_5x5": (5, 2),
}


def pointwise_convs(gen: torch.Generator) -> tuple[list[torch.Tensor], list[ConvSpec]]:
    """The 448 last 1x1 convolutions with random weights."""
    weights, specs = [], []
    for c, side in CELLS:
        for _ in range(EDGES * len(OPERATORS)):
            weights.append(torch.randn(c, c, 1, 1, generator=gen))
            specs.append(ConvSpec((c, c, 1, 1), (side, side)))
    return weights, specs


def depthwise_convs(gen: torch.Generator) -> tuple[list[torch.Tensor], list[ConvSpec]]:
    """The same 448 edges if each operator ended in its depthwise k x k conv."""
    weights, specs = [], []
    for c, side in CELLS:
        for _ in range(EDGES):
            for k, d in OPERATORS.values():
                weights.append(torch.randn(c, 1, k, k, generator=gen))
                specs.append(ConvSpec((c, 1, k, k), (side, side), dilation=d, groups=c))
    return weights, specs


def median_seconds(fn, repeats: int = 7) -> float:
    """Median wall time of `repeats` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dense_stable_rank(weight: torch.Tensor, hw: tuple[int, int], stride, dilation, groups) -> float:
    """Reference: stable rank from the SVD of the explicit circular operator matrix."""
    c_out, cin_g, kh, kw = weight.shape
    c_in, (h, w) = cin_g * groups, hw
    n = c_in * h * w
    basis = torch.eye(n, dtype=torch.float64).reshape(n, c_in, h, w)
    ph, pw = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
    rows = (torch.arange(h + ph) - ph // 2) % h
    cols = (torch.arange(w + pw) - pw // 2) % w
    padded = basis[:, :, rows][:, :, :, cols]
    out = F.conv2d(padded, weight, stride=stride, dilation=dilation, groups=groups).reshape(n, -1)
    sv = torch.linalg.svdvals(out)
    return float(sv.square().sum() / sv[0].square())


def max_relative_error(gen: torch.Generator) -> float:
    """Worst relative stable-rank error against the dense SVD over small mixed convolutions."""
    cases = [  # (C_out, C_in/groups, kh, kw, groups, hw, stride, dilation)
        (4, 3, 3, 3, 1, (8, 8), (1, 1), (1, 1)),
        (6, 1, 3, 3, 6, (8, 8), (1, 1), (2, 2)),  # depthwise, dilated
        (4, 1, 5, 5, 4, (8, 8), (2, 2), (1, 1)),  # depthwise, strided
        (4, 2, 3, 3, 2, (8, 6), (2, 1), (2, 1)),
        (3, 3, 1, 7, 1, (6, 8), (1, 2), (1, 1)),
        (5, 4, 1, 1, 1, (6, 6), (1, 1), (1, 1)),
        (6, 2, 7, 1, 3, (8, 4), (2, 2), (1, 2)),
    ]
    worst = 0.0
    for c_out, cin_g, kh, kw, groups, hw, stride, dilation in cases:
        weight = torch.randn(c_out, cin_g, kh, kw, generator=gen, dtype=torch.float64)
        norms = operator_norms(weight, hw, stride=stride, dilation=dilation, groups=groups)
        fast = float(norms.stable_rank)
        ref = dense_stable_rank(weight, hw, stride, dilation, groups)
        worst = max(worst, abs(fast - ref) / ref)
    return worst


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    weights, specs = pointwise_convs(gen)
    dw_weights, dw_specs = depthwise_convs(gen)
    threads = torch.get_num_threads()
    with torch.no_grad():
        result = {
            "stable_rank_s": median_seconds(lambda: batched_operator_norms(weights, specs)),
            "n_convs": len(weights),
            "max_rel_err": max_relative_error(gen),
            "torch_threads": threads,
            "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
            "depthwise_stable_rank_s": median_seconds(
                lambda: batched_operator_norms(dw_weights, dw_specs)
            ),
        }
        torch.set_num_threads(1)
        result["stable_rank_1_thread_s"] = median_seconds(
            lambda: batched_operator_norms(weights, specs)
        )
        torch.set_num_threads(threads)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
