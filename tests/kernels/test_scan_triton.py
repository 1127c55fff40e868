"""The Triton selective scan v1 (chunk-parallel) against the sequential definition: output, final state and every
gradient; and the dispatcher that picks v1 or v2.

On a machine without CUDA these run in Triton's CPU interpreter (the root conftest.py sets TRITON_INTERPRET=1
before triton is imported). The interpreter runs a few hundred positions a second, so lengths stay short and the
chunk is 16 positions, putting chunk boundaries inside every sequence longer than 16. The GPU version of these
checks, at lengths up to 2^20, is experiments/check_scan_gpu.py. v2 has its own file, test_scan_triton_v2.py.

Every output buffer the kernels write is NaN-poisoned first (buffers.POISON_OUTPUTS), so an element a kernel forgot
to write fails the comparison.
"""

from __future__ import annotations

import pytest
import torch
from scan_cases import TOLERANCE, as_float64, assert_scan_close, make_inputs, rel_err, run_scan

triton = pytest.importorskip("triton")

from mambadna.kernels import buffers  # noqa: E402
from mambadna.kernels.gpu import pick_version, selective_scan_triton  # noqa: E402
from mambadna.kernels.scan_ref import selective_scan_ref  # noqa: E402
from mambadna.kernels.scan_triton import selective_scan_triton_v1  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# This file's input ranges (the GPU check's): Δ before softplus ~ N(-1, 0.5), A = -exp(N(0, 0.5)).
RANGES = dict(delta_shift=-1.0, delta_scale=0.5, a_spread=0.5, bias_scale=0.3, device=DEVICE)


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    monkeypatch.setattr(buffers, "POISON_OUTPUTS", True)


def compare(b, d, l, n, groups, dtype, seed=0, with_optional=True, fn=selective_scan_triton_v1, **kw):
    """fn against the sequential scan run in float64 on the same (rounded) inputs: every output and gradient."""
    x = make_inputs(b, d, l, n, groups, dtype, seed, optional=with_optional, **RANGES)
    got = run_scan(fn, x, **kw)
    want = run_scan(selective_scan_ref, as_float64(x))
    assert_scan_close(got, want, "vs_float64", key_dtype=dtype)
    for k, v in x.items():  # gradients come back in each input's dtype
        if v is not None:
            assert got[f"d{k}"].dtype == v.dtype


@pytest.mark.parametrize("l, n", [(1, 16), (63, 16), (200, 1), (200, 4)])
def test_matches_reference_fp32(l, n):
    compare(b=2, d=4, l=l, n=n, groups=None, dtype=torch.float32, chunk_size=16, block_d=2)


@pytest.mark.parametrize("l", [63, 200])
def test_matches_reference_bf16(l):
    compare(b=1, d=4, l=l, n=4, groups=None, dtype=torch.bfloat16, chunk_size=16)


def test_grouped_bc():
    compare(b=1, d=8, l=63, n=4, groups=2, dtype=torch.float32, chunk_size=16)


def test_grouped_bc_bf16():
    compare(b=2, d=4, l=40, n=2, groups=4, dtype=torch.bfloat16, chunk_size=16, block_d=1)


def test_without_optional_inputs():
    x = make_inputs(1, 4, 50, 3, None, torch.float32, 3, optional=False, **RANGES)
    x["delta"] = x["delta"].abs()  # without softplus, Δ must already be >= 0
    y = selective_scan_triton_v1(**x, chunk_size=16)
    ref = selective_scan_ref(**x)
    assert rel_err(y, ref) < TOLERANCE["vs_float64"][torch.float32]


def test_chunk_boundary_exactly_at_length():
    """l a multiple of the chunk: no padded tail, the last chunk's adjoint comes only from the final state."""
    compare(b=1, d=2, l=32, n=3, groups=None, dtype=torch.float32, chunk_size=16, block_d=2)


@pytest.mark.slow
def test_matches_reference_l300_n16():
    compare(b=1, d=4, l=300, n=16, groups=2, dtype=torch.float32, chunk_size=16)


def test_large_delta_does_not_overflow():
    """Δ·A far below the exp range: every decay underflows to 0, nothing becomes inf or NaN."""
    x = make_inputs(1, 2, 40, 2, None, torch.float32, 5, **RANGES)
    x["delta"].fill_(60.0)
    x["A"].fill_(-64.0)
    y, h = selective_scan_triton_v1(**x, delta_softplus=True, return_final_state=True, chunk_size=16)
    ref_y, ref_h = selective_scan_ref(**x, delta_softplus=True, return_final_state=True)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    tol = TOLERANCE["vs_float64"][torch.float32]
    assert rel_err(y, ref_y) < tol and rel_err(h, ref_h) < tol


def test_rejects_bad_chunk_size():
    x = make_inputs(1, 2, 8, 2, None, torch.float32, 0, optional=False, **RANGES)
    with pytest.raises(ValueError, match="chunk_size must be a power of two"):
        selective_scan_triton_v1(**x, chunk_size=24)


# ------------------------------------------------------------------------------------------------- dispatcher


def test_dispatcher_runs_the_asked_version_and_auto_by_shape(monkeypatch):
    """version 1/2 (or "v1"/"v2") runs that kernel; None/"auto" picks by shape (kernels/choice.py): v2 where it fits
    at full width (n <= 16, channel blocks of whole warps), v1 elsewhere. Launch keywords need a version."""
    import mambadna.kernels.gpu as gpu

    calls = []
    monkeypatch.setattr(gpu, "selective_scan_triton_v1", lambda *a, **k: calls.append(("v1", sorted(k))) or a[0])
    monkeypatch.setattr(gpu, "selective_scan_triton_v2", lambda *a, **k: calls.append(("v2", sorted(k))) or a[0])
    x = make_inputs(1, 64, 8, 4, **RANGES)
    selective_scan_triton(**x, version=1, chunk_size=16)
    selective_scan_triton(**x, version="v2", tile=8)
    selective_scan_triton(**x, version="v1")
    assert calls == [("v1", ["chunk_size"]), ("v2", ["tile"]), ("v1", [])]
    calls.clear()
    selective_scan_triton(**x)
    selective_scan_triton(**x, version="auto")
    selective_scan_triton(**make_inputs(1, 4, 8, 4, **RANGES))  # d 4: no whole warp of channels
    selective_scan_triton(**make_inputs(1, 64, 8, 32, **RANGES))  # n 32: more states than v2 keeps in registers
    assert [c[0] for c in calls] == ["v2", "v2", "v1", "v1"]
    assert pick_version(x["u"], x["A"], x["B"], x["C"]) == 2
    with pytest.raises(ValueError, match="launch keywords \\['tile'\\] belong to one kernel"):
        selective_scan_triton(**x, tile=8)
    with pytest.raises(ValueError, match="version must be 1, 2 or auto"):
        selective_scan_triton(**x, version=3)
