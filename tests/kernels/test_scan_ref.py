"""The sequential selective scan (the definition) and the `selective_scan` dispatcher."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scan_cases import assert_tensor_close
from scan_cases import make_inputs as _make_inputs

import mambadna.kernels as kernels
from mambadna.kernels import available_backends, selective_scan, selective_scan_ref


def make_inputs(b=2, d=4, l=33, n=3, g=None, dtype=torch.float32, seed=0):
    """The shared factory at this file's default shape: delta ~ N(0, 1) (softplus-ed in the scan), A = -exp(N(0, 1))."""
    return _make_inputs(b, d, l, n, g, dtype, seed)


def double_loop_scan(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus):
    """Independent float64 re-derivation: explicit loops over batch, channel and position."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    b, d, l = u.shape
    n = A.shape[1]
    group_size = d // B.shape[1] if B.dim() == 4 else d
    y = torch.zeros(b, d, l, dtype=torch.float64)
    h_last = torch.zeros(b, d, n, dtype=torch.float64)
    for i in range(b):
        for c in range(d):
            grp = c // group_size
            h = initial_state[i, c].double().clone() if initial_state is not None else torch.zeros(n).double()
            for t in range(l):
                dt = delta[i, c, t] + (delta_bias[c].double() if delta_bias is not None else 0.0)
                dt = F.softplus(dt) if delta_softplus else dt
                Bt = B[i, grp, :, t] if B.dim() == 4 else B[i, :, t]
                Ct = C[i, grp, :, t] if C.dim() == 4 else C[i, :, t]
                h = torch.exp(dt * A[c]) * h + dt * Bt * u[i, c, t]
                yt = (Ct * h).sum()
                if D is not None:
                    yt = yt + D[c].double() * u[i, c, t]
                if z is not None:
                    yt = yt * F.silu(z[i, c, t].double())
                y[i, c, t] = yt
            h_last[i, c] = h
    return y, h_last


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("groups", [None, 2])
@pytest.mark.parametrize("full", [False, True])
def test_ref_matches_double_loop(dtype, groups, full):
    x = make_inputs(g=groups, dtype=dtype)
    if not full:  # no softplus in the scan: pass Δ >= 0 directly, as a caller would
        x.update(D=None, z=None, delta_bias=None, initial_state=None, delta=F.softplus(x["delta"].float()).to(dtype))
    y, h_last = selective_scan_ref(**x, delta_softplus=full, return_final_state=True)
    y_want, h_want = double_loop_scan(**x, delta_softplus=full)
    assert y.dtype == dtype and h_last.dtype == torch.float32
    # bf16 output: compare against the float64 result rounded the same way
    assert_tensor_close(y, y_want.to(dtype), "definition")
    assert_tensor_close(h_last.double(), h_want, "definition", key_dtype=torch.float32)


def test_ref_group_assignment_uses_integer_division():
    """Channel c uses group c // (d // g): zeroing group 1's B must silence channels 2 and 3 only (d=4, g=2)."""
    x = make_inputs(d=4, g=2)
    x["B"][:, 1] = 0
    y = selective_scan_ref(x["u"], x["delta"], x["A"], x["B"], x["C"])
    assert y[:, 2:].abs().max() == 0
    assert y[:, :2].abs().min() > 0


def test_ref_initial_state_continues_a_split_sequence():
    """Scanning [0, 20) then [20, 33) from the carried state equals one scan over [0, 33)."""
    x = make_inputs(l=33)
    x.update(z=None)
    whole, h_whole = selective_scan_ref(**x, delta_softplus=True, return_final_state=True)
    parts = {k: v for k, v in x.items() if k not in ("u", "delta", "B", "C", "initial_state")}
    y1, h1 = selective_scan_ref(
        x["u"][..., :20], x["delta"][..., :20], B=x["B"][..., :20], C=x["C"][..., :20],
        initial_state=x["initial_state"], delta_softplus=True, return_final_state=True, **parts,
    )
    y2, h2 = selective_scan_ref(
        x["u"][..., 20:], x["delta"][..., 20:], B=x["B"][..., 20:], C=x["C"][..., 20:],
        initial_state=h1, delta_softplus=True, return_final_state=True, **parts,
    )
    assert_tensor_close(torch.cat([y1, y2], -1), whole, "same")
    assert_tensor_close(h2, h_whole, "same")


# ----------------------------------------------------------------------------------------------- dispatcher


def test_available_backends_on_cpu():
    names = available_backends()
    assert names[:2] == ["ref", "chunked"]
    if not torch.cuda.is_available():
        assert "triton" not in names


@pytest.mark.parametrize("backend", ["ref", "chunked"])
def test_dispatch_explicit_backend_matches_ref(backend):
    x = make_inputs()
    want = selective_scan_ref(**x, delta_softplus=True)
    got = selective_scan(**x, delta_softplus=True, backend=backend)
    assert_tensor_close(got, want, "definition")


def test_dispatch_auto_on_cpu_is_chunked(monkeypatch):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    called = []
    monkeypatch.setattr(kernels, "selective_scan_chunked", lambda *a, **k: called.append("chunked") or a[0])
    selective_scan(**make_inputs())
    assert called == ["chunked"]


def test_dispatch_env_overrides_auto_but_not_argument(monkeypatch):
    called = []
    monkeypatch.setattr(kernels, "selective_scan_ref", lambda *a, **k: called.append("ref") or a[0])
    monkeypatch.setattr(kernels, "selective_scan_chunked", lambda *a, **k: called.append("chunked") or a[0])
    monkeypatch.setenv(kernels.ENV_VAR, "ref")
    selective_scan(**make_inputs())
    selective_scan(**make_inputs(), backend="chunked")
    assert called == ["ref", "chunked"]


def test_dispatch_unknown_backend_raises():
    with pytest.raises(ValueError, match="unknown scan backend 'cuda'.*ref, chunked, triton"):
        selective_scan(**make_inputs(), backend="cuda")


def test_dispatch_unknown_env_backend_names_the_variable(monkeypatch):
    monkeypatch.setenv(kernels.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="MAMBADNA_SCAN_BACKEND"):
        selective_scan(**make_inputs())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal of the triton backend")
def test_dispatch_triton_on_cpu_tensors_raises():
    with pytest.raises(ValueError, match="triton.*CUDA"):
        selective_scan(**make_inputs(), backend="triton")


def test_dispatch_tolerates_missing_triton_module(monkeypatch):
    """A broken or absent scan_triton must not break auto-selection (it falls back to chunked)."""
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    monkeypatch.setattr(kernels, "_triton_tried", True)
    monkeypatch.setattr(kernels, "_triton_fn", None)
    monkeypatch.setattr(kernels, "_triton_error", "ImportError: no triton")
    assert "triton" not in available_backends()
    x = make_inputs()
    assert_tensor_close(selective_scan(**x), selective_scan_ref(**x), "definition")


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(u=torch.zeros(2, 4)), r"u must be \(b, d, l\)"),
        (dict(delta=torch.zeros(2, 4, 32)), r"delta must be \(b, d, l\)"),
        (dict(A=torch.zeros(5, 3)), r"A must be \(d, n\) with d = 4"),
        (dict(B=torch.zeros(2, 3, 3, 33)), r"B must be \(b, n, l\) or \(b, g, n, l\) with d divisible by g"),
        (dict(C=torch.zeros(2, 4, 33)), r"C must be \(b, n, l\) or \(b, g, n, l\)"),
        (dict(B=torch.zeros(2, 2, 3, 33), C=torch.zeros(2, 4, 3, 33)), "same number of groups"),
        (dict(D=torch.zeros(3)), r"D must be \(d,\)"),
        (dict(delta_bias=torch.zeros(4, 1)), r"delta_bias must be \(d,\)"),
        (dict(z=torch.zeros(2, 4, 34)), r"z must be \(b, d, l\)"),
        (dict(initial_state=torch.zeros(2, 4, 4)), r"initial_state must be \(b, d, n\)"),
        (dict(u=torch.zeros(2, 4, 0), delta=torch.zeros(2, 4, 0)), "l >= 1"),
        (dict(u=torch.zeros(2, 4, 33, dtype=torch.long)), "u must be a floating-point tensor"),
    ],
)
def test_dispatch_bad_shapes_give_clear_messages(change, message):
    x = make_inputs()
    x.update(change)
    with pytest.raises(ValueError, match=message):
        selective_scan(**x)
