"""Shared by every selective-scan test: one input factory, one runner, one tolerance table, one comparison.

Not a test module (pytest collects test_*.py only). Import as ``from tests.kernels.scan_cases import ...`` or, as
the test files here do, ``from scan_cases import ...`` (pytest puts this folder on sys.path, rootdir-relative).
"""

from __future__ import annotations

import torch

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")

# The one tolerance table. Keyed by what a test compares, then by the dtype of the compared tensor (gradients of
# fp32 inputs are fp32 even when u is bf16):
#   "vs_float64"  relative norm error ‖x − ref‖ / ‖ref‖ of a kernel against a float64 reference run on the same
#                 (already rounded) inputs; bf16/fp16 outputs carry one rounding of their own;
#   "between"     (rtol, atol as a fraction of the reference's largest magnitude), elementwise, between two
#                 implementations that both compute in fp32 (they differ by summation order, then by the rounding
#                 of bf16 results: 8 bits of mantissa);
#   "definition"  (rtol, atol), elementwise, the sequential reference against an independent float64 loop;
#   "same"        (rtol, atol), elementwise, one implementation against itself run another way (torch's defaults).
TOLERANCE = {
    "vs_float64": {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 5e-3, torch.float64: 1e-10},
    "between": {torch.float32: (1e-4, 1e-5), torch.bfloat16: (2e-2, 1e-2), torch.float64: (1e-10, 1e-12)},
    "definition": {torch.float32: (1e-5, 1e-5), torch.bfloat16: (1e-2, 1e-5)},
    "same": {torch.float32: (1.3e-6, 1e-5)},
}


def make_inputs(b=2, d=4, l=63, n=3, g=None, dtype=torch.float32, seed=0, *, optional=True, delta_shift=0.0,
                delta_scale=1.0, a_scale=1.0, a_spread=1.0, bias_scale=0.5, layout="bdl", device="cpu"):
    """Scan inputs in realistic ranges: delta ~ N(shift, scale) (softplus-ed in the scan, after delta_bias),
    A = -a_scale·exp(N(0, a_spread)); u, delta, z in dtype, the rest fp32. layout "bld" gives u, delta, z as (b, d, l)
    views of (b, l, d) storage and shared B, C as (b, n, l) views of (b, l, n) storage, as the model makes them."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen)

    def seq(rows, scale=1.0, shift=0.0, dt=dtype):
        x = rnd(b, l, rows).transpose(1, 2) if layout == "bld" else rnd(b, rows, l)
        return (x * scale + shift).to(dt).to(device)

    xs = dict(u=seq(d), delta=seq(d, delta_scale, delta_shift),
              A=(-a_scale * torch.exp(rnd(d, n) * a_spread)).to(device))
    if g is None:
        xs.update(B=seq(n, dt=torch.float32), C=seq(n, dt=torch.float32))
    else:
        xs.update(B=rnd(b, g, n, l).to(device), C=rnd(b, g, n, l).to(device))
    if optional:
        xs.update(D=rnd(d).to(device), z=seq(d), delta_bias=(bias_scale * rnd(d)).to(device),
                  initial_state=rnd(b, d, n).to(device))
    return xs


def run_scan(fn, x, with_grads=True, softplus=True, **kwargs):
    """Scan with the final state; backprop a fixed random mix of y and the final state (float64 weights).
    Returns {"y", "h_last", "d<name>" for every input that is not None}."""
    leaves = {k: v.detach().clone().requires_grad_(with_grads) if v is not None else None for k, v in x.items()}
    y, h_last = fn(**leaves, delta_softplus=softplus, return_final_state=True, **kwargs)
    out = {"y": y.detach(), "h_last": h_last.detach()}
    if with_grads:
        gen = torch.Generator().manual_seed(1)
        wy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.device)
        wh = torch.randn(h_last.shape, generator=gen, dtype=torch.float64).to(y.device)
        ((y.double() * wy).sum() + (h_last.double() * wh).sum()).backward()
        out.update({"d" + k: v.grad for k, v in leaves.items() if v is not None})
    return out


def as_float64(x):
    return {k: v.detach().double() if v is not None else None for k, v in x.items()}


def rel_err(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def assert_scan_close(got: dict, want: dict, kind: str, key_dtype=None):
    """Every tensor of `want` against `got`: finite, the same dtype unless kind is "vs_float64", and within
    TOLERANCE[kind] for the dtype of got's tensor (or key_dtype)."""
    for key, w in want.items():
        g = got[key]
        assert torch.isfinite(g.float()).all(), f"{key} has NaN/inf: an unwritten or broken element"
        dt = key_dtype or g.dtype
        if kind == "vs_float64":
            err = rel_err(g, w)
            assert err < TOLERANCE[kind][dt], f"{key}: relative error {err:.2e} > {TOLERANCE[kind][dt]:.0e}"
            continue
        assert g.dtype == w.dtype, f"{key}: dtype {g.dtype} != {w.dtype}"
        rtol, atol = TOLERANCE[kind][dt]
        if kind == "between":
            atol = atol * (w.float().abs().max().item() or 1.0)
        torch.testing.assert_close(g.float(), w.float(), rtol=rtol, atol=atol, msg=lambda m: f"{key}: {m}")


def assert_tensor_close(got: torch.Tensor, want: torch.Tensor, kind: str, key_dtype=None):
    """assert_scan_close for one tensor (compared as float, so a bf16 result may meet its float64 definition)."""
    rtol, atol = TOLERANCE[kind][key_dtype or got.dtype]
    torch.testing.assert_close(got.float() if got.dtype != want.dtype else got,
                               want.float() if got.dtype != want.dtype else want, rtol=rtol, atol=atol)
