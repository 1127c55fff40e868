"""The GPU selective scan: runs the Triton kernel v1 (scan_triton.py, chunk-parallel) or v2 (scan_v2.py, state in
registers), and is what ``mambadna.kernels.selective_scan`` calls for backend "triton". Which one runs by default is
decided by shape in choice.py, from a same-run measurement; the model setting `scan_kernel` can pin either."""

from __future__ import annotations

from mambadna.kernels.choice import auto_version, v2_fits
from mambadna.kernels.scan_triton import selective_scan_triton_v1
from mambadna.kernels.scan_v2 import selective_scan_triton_v2

VERSIONS = {"auto": None, "v1": 1, "v2": 2}  # the setting's names -> `version`


def _groups(B, C) -> int:
    return max(B.shape[1] if B.dim() == 4 else 1, C.shape[1] if C.dim() == 4 else 1)


def v2_applies(u, A, B, C) -> bool:
    """Whether v2 runs at full width on these inputs (choice.v2_fits)."""
    return v2_fits(u.shape[1], A.shape[1], _groups(B, C))


def pick_version(u, A, B, C) -> int:
    """The kernel "auto" runs for these inputs (choice.auto_version: by shape, from the committed measurement)."""
    b, d, l = u.shape
    return auto_version(b, d, l, A.shape[1], _groups(B, C))


def selective_scan_triton(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_final_state=False, *, version: int | str | None = None, **launch,
):
    """The selective scan on Triton; arguments and result as ``scan_ref.selective_scan_ref``.

    ``version`` 1 or "v1" (chunk-parallel, scan_triton.py), 2 or "v2" (state in registers, scan_v2.py; at most 16
    states), None or "auto" (`pick_version`). Launch keywords (tests shrink the launch shape, benchmarks sweep it)
    belong to one kernel, so they need an explicit version: v1 takes chunk_size, block_d, num_warps, stages,
    unroll; v2 the keywords of ``scan_v2.plan``.
    """
    version = VERSIONS.get(version, version)
    if version is None:
        if launch:
            raise ValueError(f"launch keywords {sorted(launch)} belong to one kernel: pass version=1 or 2 with them")
        version = pick_version(u, A, B, C)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_final_state)
    if version == 1:
        return selective_scan_triton_v1(*args, **launch)
    if version != 2:
        raise ValueError(f"selective scan version must be 1, 2 or auto, got {version!r}")
    return selective_scan_triton_v2(*args, **launch)
