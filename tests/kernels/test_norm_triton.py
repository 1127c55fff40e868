"""The Triton RMSNorm (mambadna/kernels/norm_triton.py) against its float64 reference: output and both gradients,
at row counts and widths that are not powers of two, fp32 and bf16 x, strided inputs, NaN-poisoned outputs; its
determinism.

On a machine without CUDA these run in Triton's CPU interpreter (the root conftest.py sets TRITON_INTERPRET=1).
"""

from __future__ import annotations

import pytest
import torch
from scan_cases import TOLERANCE, rel_err

triton = pytest.importorskip("triton")

from mambadna.kernels import buffers, norm_triton  # noqa: E402
from mambadna.kernels.norm_triton import rms_norm, rms_norm_ref  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
EPS = 1e-5


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    monkeypatch.setattr(buffers, "POISON_OUTPUTS", True)


def make(shape, dtype=torch.float32, seed=0):
    """x (shape) in dtype, on the residual stream's scale (rows of very different sizes), weight (d,) fp32 near 1,
    and a fixed upstream gradient dy in the output's (weight's) dtype."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * torch.exp(torch.randn(*shape[:-1], 1, generator=gen))
    w = 1 + 0.3 * torch.randn(shape[-1], generator=gen)
    dy = torch.randn(shape, generator=gen)
    return x.to(dtype).to(DEVICE), w.to(DEVICE), dy.to(DEVICE)


def run(fn, x, w, dy):
    """-> (y, dx, dw) of fn(x, w) with upstream gradient dy."""
    x, w = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    y = fn(x, w, EPS)
    y.backward(dy.to(y.dtype))
    return y.detach(), x.grad, w.grad


def check_against_float64(x, w, dy):
    got = run(rms_norm, x, w, dy)
    want = run(rms_norm_ref, x.double(), w.double(), dy.double())
    assert [t.dtype for t in got] == [w.dtype, x.dtype, w.dtype]  # y and dw in weight's dtype, dx in x's
    for name, g, r in zip(("y", "dx", "dw"), got, want):
        assert g.shape == r.shape, name
        assert torch.isfinite(g).all(), f"{name}: an element the kernel did not write (NaN-poisoned)"
        assert rel_err(g, r) <= TOLERANCE["vs_float64"][g.dtype], (name, rel_err(g, r))
    return got


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d", [16, 48, 100, 256])
@pytest.mark.parametrize("rows", [1, 3, 37])
def test_matches_float64_reference(rows, d, dtype):
    check_against_float64(*make((rows, d), dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_the_eager_norm_in_its_own_precision(dtype):
    """Against the eager module's fp32 math elementwise: the two differ only by summation order."""
    x, w, dy = make((2, 19, 100), dtype)
    for g, r in zip(run(rms_norm, x, w, dy), run(rms_norm_ref, x, w, dy)):
        rtol, atol = TOLERANCE["between"][g.dtype]
        torch.testing.assert_close(g, r, rtol=rtol, atol=atol * r.abs().max().item())


@pytest.mark.parametrize("d", [8192, norm_triton.MAX_D])
def test_wide_rows(d):
    check_against_float64(*make((3, d)))


def test_too_wide_a_row_is_refused():
    x = torch.zeros(2, norm_triton.MAX_D + 1, device=DEVICE)
    with pytest.raises(ValueError, match=f"at most {norm_triton.MAX_D} wide; got d = {norm_triton.MAX_D + 1}"):
        rms_norm(x, torch.ones(x.shape[-1], device=DEVICE), EPS)
    with pytest.raises(ValueError, match=r"x \(\.\.\., d\) and weight \(d,\)"):
        rms_norm(torch.zeros(2, 8, device=DEVICE), torch.ones(6, device=DEVICE), EPS)


def test_backward_programs_looping_over_row_blocks(monkeypatch):
    """Few programs, each taking many row blocks (and the last one blocks past the end): as at 2^16 rows on a GPU."""
    monkeypatch.setattr(norm_triton, "BWD_PROGRAMS", 3)
    monkeypatch.setattr(norm_triton, "TILE", 64)  # d 48 -> one row a block: 37 blocks, 13 + 13 + 11 a program
    check_against_float64(*make((37, 48)))


@pytest.mark.parametrize("layout", ["chunk", "strided_rows", "transposed_leading", "last_dim_strided"])
def test_strided_inputs_give_the_contiguous_result(layout):
    """Views the model makes (an rc_equivariant strand: half of each (b, l, 2d) row) and others: the same bits as a
    contiguous copy; output and gradients come back in x's shape."""
    base, w = make((2, 7, 2 * 40))[0], make((1, 40))[1]
    x = {"chunk": base[..., :40],  # rows 2d apart: a view of the storage
         "strided_rows": base[:, ::2, 10:50],
         "transposed_leading": base[..., :40].transpose(0, 1),  # leading dims do not merge: one copy
         "last_dim_strided": base[..., ::2]}[layout]
    dy = make(tuple(x.shape), seed=1)[2]
    got = run(rms_norm, x, w, dy)
    want = run(rms_norm, x.contiguous(), w, dy)
    assert got[0].shape == got[1].shape == x.shape
    for g, r in zip(got, want):
        assert torch.equal(g, r)
    check_against_float64(x, w, dy)


def test_backward_is_deterministic():
    x, w, dy = make((37, 100))
    first, second = run(rms_norm, x, w, dy), run(rms_norm, x, w, dy)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_no_rows():
    y, dx, dw = run(rms_norm, *make((0, 16)))
    assert y.shape == dx.shape == (0, 16) and torch.equal(dw, torch.zeros(16, device=DEVICE))
