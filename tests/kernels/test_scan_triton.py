"""The Triton selective scan against the sequential definition: output, final state and every gradient.

On a machine without CUDA these run in Triton's CPU interpreter (the root conftest.py sets TRITON_INTERPRET=1
before triton is imported). The interpreter runs a few hundred positions a second, so lengths stay short and the
chunk is 16 positions, putting chunk boundaries inside every sequence longer than 16. The GPU version of these
checks, at lengths up to 2^20, is experiments/check_scan_gpu.py.

Every output buffer the kernels write is NaN-poisoned first (POISON_OUTPUTS), so an element a kernel forgot to
write fails the comparison.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from mambadna.kernels import scan_triton  # noqa: E402
from mambadna.kernels.scan_ref import selective_scan_ref  # noqa: E402
from mambadna.kernels.scan_triton import selective_scan_triton  # noqa: E402

# ‖x − ref‖ / ‖ref‖ allowed, by the dtype of u, delta, z, B, C (states and accumulation are fp32 in the kernel).
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    monkeypatch.setattr(scan_triton, "POISON_OUTPUTS", True)


def make_inputs(b, d, l, n, groups, dtype, seed, with_optional=True):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, shift=0.0, dt=dtype):
        return (torch.randn(*shape, generator=g) * scale + shift).to(dt).to(DEVICE)

    bc_shape = (b, groups, n, l) if groups else (b, n, l)
    xs = {
        "u": rnd(b, d, l),
        "delta": rnd(b, d, l, scale=0.5, shift=-1.0),
        "A": -torch.exp(rnd(d, n, scale=0.5, dt=torch.float32)),
        "B": rnd(*bc_shape),
        "C": rnd(*bc_shape),
    }
    if with_optional:
        xs |= {
            "D": rnd(d, dt=torch.float32),
            "z": rnd(b, d, l),
            "delta_bias": rnd(d, scale=0.3, dt=torch.float32),
            "initial_state": rnd(b, d, n, dt=torch.float32),
        }
    return {k: v.requires_grad_() for k, v in xs.items()}


def run_scan(fn, xs, gy, gh, **kw):
    y, h = fn(**xs, delta_softplus=True, return_final_state=True, **kw)
    grads = torch.autograd.grad((y.double() * gy).sum() + (h.double() * gh).sum(), list(xs.values()))
    return {"y": y, "h_last": h, **{f"d{k}": gr for k, gr in zip(xs, grads)}}


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def compare(b, d, l, n, groups, dtype, seed=0, with_optional=True, chunk_size=16, block_d=None):
    xs = make_inputs(b, d, l, n, groups, dtype, seed, with_optional)
    g = torch.Generator().manual_seed(seed + 1)
    gy = torch.randn(b, d, l, generator=g, dtype=torch.float64).to(DEVICE)
    gh = torch.randn(b, d, n, generator=g, dtype=torch.float64).to(DEVICE)
    got = run_scan(selective_scan_triton, xs, gy, gh, chunk_size=chunk_size, block_d=block_d)
    # The reference sees the same (already rounded) inputs, upcast to float64.
    ref_xs = {k: v.detach().double().requires_grad_() for k, v in xs.items()}
    ref = run_scan(selective_scan_ref, ref_xs, gy, gh)
    for name, value in got.items():
        assert torch.isfinite(value).all(), f"{name} has NaN/inf: an unwritten or broken element"
        err = rel_err(value, ref[name])
        assert err < TOLERANCE[dtype], f"{name}: relative error {err:.2e} > {TOLERANCE[dtype]:.0e}"
    for k, v in xs.items():  # gradients come back in each input's dtype
        assert got[f"d{k}"].dtype == v.dtype


@pytest.mark.parametrize("l, n", [(1, 16), (63, 16), (200, 1), (200, 4)])
def test_matches_reference_fp32(l, n):
    compare(b=2, d=4, l=l, n=n, groups=None, dtype=torch.float32, block_d=2)


@pytest.mark.parametrize("l", [63, 200])
def test_matches_reference_bf16(l):
    compare(b=1, d=4, l=l, n=4, groups=None, dtype=torch.bfloat16)


def test_grouped_bc():
    compare(b=1, d=8, l=63, n=4, groups=2, dtype=torch.float32)


def test_grouped_bc_bf16():
    compare(b=2, d=4, l=40, n=2, groups=4, dtype=torch.bfloat16, block_d=1)


def test_without_optional_inputs():
    xs = make_inputs(1, 4, 50, 3, None, torch.float32, 3, with_optional=False)
    xs["delta"] = xs["delta"].detach().abs()  # without softplus, Δ must already be >= 0
    y = selective_scan_triton(**xs, chunk_size=16)
    ref = selective_scan_ref(**{k: v.detach() for k, v in xs.items()})
    assert rel_err(y, ref) < TOLERANCE[torch.float32]


def test_chunk_boundary_exactly_at_length():
    """l a multiple of the chunk: no padded tail, the last chunk's adjoint comes only from the final state."""
    compare(b=1, d=2, l=32, n=3, groups=None, dtype=torch.float32, block_d=2)


@pytest.mark.slow
def test_matches_reference_l300_n16():
    compare(b=1, d=4, l=300, n=16, groups=2, dtype=torch.float32)


def test_large_delta_does_not_overflow():
    """Δ·A far below the exp range: every decay underflows to 0, nothing becomes inf or NaN."""
    xs = make_inputs(1, 2, 40, 2, None, torch.float32, 5)
    with torch.no_grad():
        xs["delta"].fill_(60.0)
        xs["A"].fill_(-64.0)
    y, h = selective_scan_triton(**xs, delta_softplus=True, return_final_state=True, chunk_size=16)
    ref_y, ref_h = selective_scan_ref(**{k: v.detach() for k, v in xs.items()}, delta_softplus=True,
                                      return_final_state=True)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    assert rel_err(y, ref_y) < 1e-5 and rel_err(h, ref_h) < 1e-5


def test_rejects_bad_chunk_size():
    xs = make_inputs(1, 2, 8, 2, None, torch.float32, 0, with_optional=False)
    with pytest.raises(ValueError, match="chunk_size must be a power of two"):
        selective_scan_triton(**xs, chunk_size=24)
