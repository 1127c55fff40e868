"""The GPU selective scan: picks the Triton kernel, v1 (scan_triton.py, chunk-parallel) or v2 (scan_v2.py, state in
registers), and is what ``mambadna.kernels.selective_scan`` calls for backend "triton"."""

from __future__ import annotations

from mambadna.kernels import scan_v2
from mambadna.kernels.scan_triton import selective_scan_triton_v1
from mambadna.kernels.scan_v2 import selective_scan_triton_v2

V1_KEYS = {"chunk_size", "num_warps", "stages"}
V2_KEYS = {"tile", "ckpt_tiles", "chunk", "fwd_warps", "bwd_warps", "sm_warps", "fma_exps"}


# Whether the dispatcher may pick v2 at all. Off: in the one same-run measurement on an H200 (2026-12-01,
# experiments/results/bench_scan.json) v2 was slower than v1 at every benchmark shape, so v1 stays the default until
# v2 wins on every shape (issue 13); `version=2` runs v2 anywhere `v2_applies`.
PREFER_V2 = False


def v2_applies(u, A, B, C) -> bool:
    """v2 takes n <= 16 (its states live in registers) and channel blocks of whole warps inside one B/C group."""
    g = max(B.shape[1] if B.dim() == 4 else 1, C.shape[1] if C.dim() == 4 else 1)
    return A.shape[1] <= scan_v2.MAX_STATES and (u.shape[1] // g) % 32 == 0


def pick_version(u, A, B, C) -> int:
    """The kernel the dispatcher uses: v2 where it applies and PREFER_V2 is set, else v1 (experiments/BENCHMARKS.md
    has the measurements behind the choice)."""
    return 2 if PREFER_V2 and v2_applies(u, A, B, C) else 1


def selective_scan_triton(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_final_state=False, *, version: int | None = None, **launch,
):
    """The selective scan on Triton; arguments and result as ``scan_ref.selective_scan_ref``.

    ``version`` 1 (chunk-parallel, scan_triton.py) or 2 (state in registers, scan_v2.py); None picks by
    `pick_version`, or by the launch keywords when they belong to one version only (v1: chunk_size, num_warps,
    stages; v2: tile, ckpt_tiles, chunk, fwd_warps, bwd_warps; both: block_d, unroll).
    """
    if version is None:
        if launch.keys() & V1_KEYS:
            version = 1
        elif launch.keys() & V2_KEYS:
            version = 2
        else:
            version = pick_version(u, A, B, C)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_final_state)
    if version == 1:
        return selective_scan_triton_v1(*args, **launch)
    if version != 2:
        raise ValueError(f"selective scan version must be 1 or 2, got {version!r}")
    return selective_scan_triton_v2(*args, **launch)
