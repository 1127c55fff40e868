"""Every selective-scan backend, one case: ref, chunked, Triton v1 and v2, against the definition in float64.

A length that is not a power of two (37), every optional input, the final state and the gradient of every input,
with NaN-poisoned kernel outputs. Backend-specific cases live in test_scan_ref/_chunked/_triton/_triton_v2.py.
"""

from __future__ import annotations

import pytest
import torch
from scan_cases import as_float64, assert_scan_close, make_inputs, run_scan

from mambadna.kernels import buffers, selective_scan_chunked, selective_scan_ref

BACKENDS = ["ref", "chunked", "triton_v1", "triton_v2"]


def _fn(name):
    if name == "ref":
        return selective_scan_ref
    if name == "chunked":
        return lambda *a, **k: selective_scan_chunked(*a, chunk_size=8, **k)
    pytest.importorskip("triton")
    from mambadna.kernels.gpu import selective_scan_triton

    if name == "triton_v1":
        return lambda *a, **k: selective_scan_triton(*a, version=1, chunk_size=16, **k)
    return lambda *a, **k: selective_scan_triton(*a, version=2, block_d=4, tile=8, ckpt_tiles=2, chunk=16, **k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_matches_float64_definition(backend, dtype, monkeypatch):
    monkeypatch.setattr(buffers, "POISON_OUTPUTS", True)
    device = "cuda" if torch.cuda.is_available() and backend.startswith("triton") else "cpu"
    x = make_inputs(2, 4, 37, 4, None, dtype, seed=3, delta_shift=-1.0, delta_scale=0.5, a_spread=0.5, device=device)
    got = run_scan(_fn(backend), x)
    want = run_scan(selective_scan_ref, as_float64(x))
    assert_scan_close(got, want, "vs_float64", key_dtype=dtype)
