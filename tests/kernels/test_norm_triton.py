"""The Triton RMSNorm (mambadna/kernels/norm_triton.py) against its float64 reference: output and both gradients,
at row counts and widths that are not powers of two, fp32 and bf16 x, strided inputs, NaN-poisoned outputs; its
determinism; and the model setting `norm_backend` (MambaLM with the kernel equals MambaLM with the eager norm).

On a machine without CUDA these run in Triton's CPU interpreter (the root conftest.py sets TRITON_INTERPRET=1).
"""

from __future__ import annotations

import pytest
import torch
from scan_cases import TOLERANCE, rel_err

triton = pytest.importorskip("triton")

from mambadna import kernels  # noqa: E402
from mambadna.config import MambaConfig  # noqa: E402
from mambadna.kernels import buffers, norm_triton  # noqa: E402
from mambadna.kernels.norm_triton import rms_norm, rms_norm_ref  # noqa: E402
from mambadna.model import MambaLM  # noqa: E402

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


@pytest.mark.parametrize("d", [5000, norm_triton.MAX_D])  # one row a program
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


# ---- the model setting ----

def test_setting_default_validation_and_choice(monkeypatch):
    assert MambaConfig(d_model=32, n_layer=1).norm_backend == "auto"
    with pytest.raises(ValueError, match="norm_backend must be one of"):
        MambaConfig(d_model=32, n_layer=1, norm_backend="cuda")
    x = torch.zeros(2, 4, device=DEVICE)
    assert kernels.norm_module("torch", x) is None
    assert (kernels.norm_module("auto", x) is norm_triton) == x.is_cuda  # auto: the kernel on CUDA only
    assert kernels.norm_module("triton", x) is norm_triton  # in the interpreter, CPU tensors too
    with pytest.raises(ValueError, match="unknown norm_backend 'fast'"):
        kernels.norm_module("fast", x)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if not x.is_cuda:
        with pytest.raises(ValueError, match="needs CUDA tensors; x is on cpu"):
            kernels.norm_module("triton", x)
    monkeypatch.setitem(kernels._optional, "norm_triton", "ImportError: no triton")
    with pytest.raises(ValueError, match="unavailable: ImportError: no triton"):
        kernels.norm_module("triton", x)
    assert kernels.norm_module("auto", x) is None


def _loss_and_grads(model, ids, autocast):
    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=autocast):
        logits = model(ids)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("options, autocast", [({}, False), ({}, True), ({"rc_equivariant": True}, False)],
                         ids=["fp32", "bf16-autocast", "rc_equivariant"])
def test_model_with_the_kernel_equals_the_eager_norm(monkeypatch, options, autocast):
    """norm_backend triton: every norm (the blocks' and the final one) runs the kernel, the weights keep their names,
    and loss and every gradient match the eager norm's. rc_equivariant hands the final norm strided strand views."""
    calls = []
    fused = norm_triton.rms_norm
    monkeypatch.setattr(norm_triton, "rms_norm", lambda *a: calls.append(a[0].shape) or fused(*a))
    torch.manual_seed(0)
    config = MambaConfig(d_model=24, n_layer=2, d_state=4, norm_backend="triton", **options)
    model = MambaLM(config).to(DEVICE)
    eager = MambaLM(MambaConfig(**{**config.to_dict(), "norm_backend": "torch"})).to(DEVICE)
    eager.load_state_dict(model.state_dict())
    assert [m.backend for m in (*(layer.norm for layer in model.layers), model.norm_f)] == ["triton"] * 3
    ids = torch.randint(5, 9, (2, 21), device=DEVICE)
    got_loss, got = _loss_and_grads(model, ids, autocast)
    assert len(calls) == 3 + options.get("rc_equivariant", False)  # rc: the final norm once a strand
    want_loss, want = _loss_and_grads(eager, ids, autocast)
    assert got.keys() == want.keys()
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-6)
    tol = TOLERANCE["between"][torch.bfloat16 if autocast else torch.float32]
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=tol[0], atol=tol[1] * want[name].abs().max().item(),
                                   msg=name)
