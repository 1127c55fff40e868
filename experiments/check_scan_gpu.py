"""GPU correctness check of the Triton selective scan against a float64 reference (run on an H100/H200).

    python experiments/check_scan_gpu.py            # all cases; exits non-zero on any failure

For every case it compares the output, the final state and the gradient of every input (u, delta, A, B, C, D, z,
delta_bias, initial_state) with the chunked PyTorch scan run in float64 on upcast copies of the same inputs
(the chunked scan is itself tested against the sequential definition in CI). Outputs are NaN-poisoned, so an
element the kernel forgot to write fails. Error is ‖x − ref‖ / ‖ref‖ per tensor; a second block checks that the
error does not grow with the length, up to 2^20.
"""

from __future__ import annotations

import argparse
import sys

import torch

from mambadna.kernels import scan_triton
from mambadna.kernels.scan_chunked import selective_scan_chunked
from mambadna.kernels.scan_triton import selective_scan_triton

# ‖x − ref‖ / ‖ref‖ allowed per input dtype (states and accumulation are fp32 in every case).
TOLERANCE = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 1e-2}
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def make_inputs(b, d, l, n, groups, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)

    def rnd(*shape, scale=1.0, shift=0.0, dt=dtype):
        return (torch.randn(*shape, generator=g, device="cuda") * scale + shift).to(dt)

    u = rnd(b, d, l)
    delta = rnd(b, d, l, scale=0.5, shift=-1.0)
    A = -torch.exp(rnd(d, n, scale=0.5, dt=torch.float32))
    shape_bc = (b, groups, n, l) if groups else (b, n, l)
    B, C = rnd(*shape_bc), rnd(*shape_bc)
    D = rnd(d, dt=torch.float32)
    z = rnd(b, d, l)
    bias = rnd(d, scale=0.3, dt=torch.float32)
    h0 = rnd(b, d, n, dt=torch.float32)
    return [t.requires_grad_() for t in (u, delta, A, B, C, D, z, bias, h0)]


def run(fn, xs, gy, gh, **kw):
    y, h = fn(*xs[:7], delta_bias=xs[7], delta_softplus=True, initial_state=xs[8], return_final_state=True, **kw)
    grads = torch.autograd.grad((y.float() * gy).sum() + (h.float() * gh).sum(), xs)
    return [y.float(), h.float(), *[gr.float() for gr in grads]]


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def check(b, d, l, n, groups, dtype, seed=0, **kw):
    xs = make_inputs(b, d, l, n, groups, dtype, seed)
    gen = torch.Generator(device="cuda").manual_seed(seed + 1)
    gy = torch.randn(b, d, l, device="cuda", generator=gen)
    gh = torch.randn(b, d, n, device="cuda", generator=gen)
    got = run(selective_scan_triton, xs, gy, gh, **kw)
    ref_in = [x.detach().double().requires_grad_() for x in xs]
    ref = run(selective_scan_chunked, ref_in, gy.double(), gh.double())
    errs = {name: rel(a, r) for name, a, r in zip(("y", "h_last", *NAMES), got, ref)}
    nan = any(not torch.isfinite(t).all() for t in got)
    worst = max(errs.values())
    ok = not nan and worst <= TOLERANCE[dtype]
    return ok, worst, errs, nan


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the 2^20 cases")
    args = ap.parse_args()
    scan_triton.POISON_OUTPUTS = True
    cases = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        cases += [(2, 64, 1, 16, None, dtype), (2, 64, 63, 16, None, dtype), (2, 128, 1000, 16, 4, dtype),
                  (1, 96, 4097, 16, None, dtype), (2, 64, 4097, 64, 2, dtype), (1, 32, 4097, 1, None, dtype)]
    cases += [(1, 1536, 4097, 16, None, torch.bfloat16), (1, 64, 2**16, 16, None, torch.float32),
              (1, 64, 2**16, 16, None, torch.bfloat16)]
    if not args.quick:
        cases += [(1, 16, 2**20, 16, None, torch.float32), (1, 16, 2**20, 16, None, torch.bfloat16)]
    failures = 0
    print(f"{'b':>3} {'d':>5} {'l':>8} {'n':>3} {'g':>4} {'dtype':>9} {'worst rel err':>14} {'tol':>7}  worst tensor")
    for b, d, l, n, groups, dtype in cases:
        ok, worst, errs, nan = check(b, d, l, n, groups, dtype)
        failures += not ok
        name = max(errs, key=errs.get)
        print(f"{b:>3} {d:>5} {l:>8} {n:>3} {str(groups or '-'):>4} {str(dtype)[6:]:>9} {worst:>14.2e} "
              f"{TOLERANCE[dtype]:>7.0e}  {name}{'  NaN!' if nan else ''}{'' if ok else '  FAIL'}", flush=True)
    print("error against length (fp32, b 1, d 16, n 16): must not grow with l")
    lengths = [4097, 2**14, 2**16] + ([] if args.quick else [2**18, 2**20])
    for l in lengths:
        _, worst, errs, _ = check(1, 16, l, 16, None, torch.float32, seed=7)
        print(f"  l={l:>8}  y {errs['y']:.2e}  delta {errs['delta']:.2e}  A {errs['A']:.2e}  worst {worst:.2e}")
    print(f"{len(cases) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
