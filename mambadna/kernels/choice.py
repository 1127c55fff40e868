"""Which GPU scan kernel runs: the names the model setting `scan_kernel` takes, and the rule "auto" follows; and the
names of `conv_backend` (the causal conv: PyTorch's, or conv_triton.py; "auto" runs Triton on CUDA tensors).

Plain Python (no Triton), so that the config can name the kernels and tests can check the rule on any machine.
v1 = scan_triton.py (chunk-parallel, any number of states); v2 = scan_v2.py (state in registers, at most
V2_MAX_STATES states a channel). Both compute the same function; they differ in speed and peak memory only.
NORM_BACKENDS: the model setting `norm_backend` (the RMSNorm: eager torch, or norm_triton.py; "auto" = triton on CUDA).
"""

from __future__ import annotations

import math

SCAN_KERNELS = ("auto", "v1", "v2")
CONV_BACKENDS = ("torch", "triton", "auto")
NORM_BACKENDS = ("torch", "triton", "auto")
V2_MAX_STATES = 16  # a channel's states live in registers, unrolled

# fwd+bwd ms of v1 and v2 in one run: one NVIDIA H100 80GB HBM3, 2026-12-07 09:11 UTC, experiments/gpu_scan.sh
# (bench_scan.py; bf16 u/Δ/z/B/C as (b, d, l) contiguous, z gate, softplus Δ with delta_bias, shared B/C; v2 with its
# forward on 4 lanes, its default since; experiments/results/gpu_scan_h100_2026-12-07d/, the table in
# experiments/BENCHMARKS.md). (b, d, l, n) -> (v1 ms, v2 ms). Change the table when a same-run measurement changes
# the winner. The 12-06 H100 run (v2 before its launch changes: 53.1 / 65.5 / 5.80 / 11.4 ms) had v2 ahead
# or tied too.
MEASURED = {
    (1, 512, 2**20, 16): (66.73, 46.71),
    (8, 512, 2**17, 16): (65.93, 45.93),
    (8, 1536, 4096, 16): (6.14, 4.79),
    (32, 2048, 2048, 16): (16.10, 10.76),
}
# v2 also wins a near tie: its peak memory is lower (9.4 against 13.4 GiB at (1, 512, 2^20), same run).
TIE = 0.02


def v2_fits(d: int, n: int, groups: int = 1) -> bool:
    """Where v2 runs at full width: n <= V2_MAX_STATES, and the channels of a B/C group fill whole warps (v2's
    channel blocks are 32·warps channels inside one group). Elsewhere it still computes, on narrow blocks."""
    return n <= V2_MAX_STATES and (d // groups) % 32 == 0


def nearest_measured(b: int, d: int, l: int) -> tuple[int, int, int, int]:
    """The MEASURED shape closest to (b, d, l) in log2 of the parallel width b·d and of the length l: the two numbers
    that decide how a scan kernel fills the GPU (width: programs; length: how far the sequence must be cut)."""
    def dist(s):
        return (math.log2(s[0] * s[1]) - math.log2(b * d)) ** 2 + (math.log2(s[2]) - math.log2(l)) ** 2

    return min(MEASURED, key=dist)


def auto_version(b: int, d: int, l: int, n: int, groups: int = 1) -> int:
    """The kernel "auto" runs: 1 where v2 does not fit (`v2_fits`); else the winner at the nearest measured shape,
    v2 on a tie within TIE. With the table above that is v2 wherever it fits: it won or tied at every shape."""
    if not v2_fits(d, n, groups):
        return 1
    v1_ms, v2_ms = MEASURED[nearest_measured(b, d, max(l, 1))]
    return 2 if v2_ms <= v1_ms * (1 + TIE) else 1
