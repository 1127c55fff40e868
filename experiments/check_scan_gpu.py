"""GPU correctness check of the Triton selective scans, v1 and v2, against a float64 reference (run on an H100/H200).

    python experiments/check_scan_gpu.py                    # all cases, both versions; exits non-zero on a failure
    python experiments/check_scan_gpu.py --versions 2 --quick --part 0/2   # half of the quick cases of v2
    python experiments/check_scan_gpu.py --cpu-smoke        # tiny cases in Triton's interpreter, seconds

For every case it compares the output, the final state and the gradient of every input (u, delta, A, B, C, D, z,
delta_bias, initial_state) with the chunked PyTorch scan run in float64 on upcast copies of the same inputs (the
chunked scan is itself tested against the sequential definition in CI). Outputs are NaN-poisoned, so an element a
kernel forgot to write fails. Error is ‖x − ref‖ / ‖ref‖ per tensor; a last block checks that the error does not
grow with the length. Layout "bld" passes u, delta, z, dy as (b, d, l) views of (b, l, d) storage and B, C as
(b, n, l) views of (b, l, n) storage; layout "model" the exact strides MambaMixer passes (model_layout.py). A case v2 does not take (n > 16,
channel blocks narrower than a warp) runs v1 and is labelled so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

if "--cpu-smoke" in sys.argv:  # the interpreter must be chosen before triton is imported
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

from mambadna.kernels import buffers  # noqa: E402
from mambadna.kernels.gpu import selective_scan_triton, v2_applies  # noqa: E402
from mambadna.kernels.scan_chunked import selective_scan_chunked  # noqa: E402
from model_layout import model_scan_views, out_grad_view  # noqa: E402

# ‖x − ref‖ / ‖ref‖ allowed per input dtype (states and accumulation are fp32 in every case).
TOLERANCE = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 1e-2}
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def make_inputs(b, d, l, n, groups, dtype, seed, device, layout="bdl"):
    g = torch.Generator(device=device).manual_seed(seed)

    def rnd(*shape, scale=1.0, shift=0.0, dt=dtype):
        return (torch.randn(*shape, generator=g, device=device) * scale + shift).to(dt)

    views = model_scan_views(b, d, l, n, dtype, device) if layout == "model" else {}

    def seq(name, rows, scale=1.0, shift=0.0):  # a (b, rows, l) input in the case's layout
        if name in views:  # the model's own strides, filled in place
            return views[name].copy_(rnd(b, rows, l, scale=scale, shift=shift))
        if layout == "bld":
            return rnd(b, l, rows, scale=scale, shift=shift).transpose(1, 2)
        return rnd(b, rows, l, scale=scale, shift=shift)

    u, delta = seq("u", d), seq("delta", d, scale=0.5, shift=-1.0)
    A = -torch.exp(rnd(d, n, scale=0.5, dt=torch.float32))
    if groups:
        B, C = rnd(b, groups, n, l), rnd(b, groups, n, l)
    else:
        B, C = seq("B", n), seq("C", n)
    D = rnd(d, dt=torch.float32)
    z = seq("z", d)
    bias = rnd(d, scale=0.3, dt=torch.float32)
    h0 = rnd(b, d, n, dt=torch.float32)
    return [t.detach().requires_grad_() for t in (u, delta, A, B, C, D, z, bias, h0)]


def run(fn, xs, gy, gh, **kw):
    y, h = fn(*xs[:7], delta_bias=xs[7], delta_softplus=True, initial_state=xs[8], return_final_state=True, **kw)
    grads = torch.autograd.grad((y.float() * gy).sum() + (h.float() * gh).sum(), xs)
    return [y.float(), h.float(), *[gr.float() for gr in grads]]


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def check(version, b, d, l, n, groups, dtype, layout="bdl", seed=0, device="cuda", force=False, launch=None):
    xs = make_inputs(b, d, l, n, groups, dtype, seed, device, layout)
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    gy = (out_grad_view(b, d, l, torch.float32, device, gen) if layout == "model" else
          torch.randn(b, d, l, device=device, generator=gen))
    gh = torch.randn(b, d, n, device=device, generator=gen)
    used = 2 if version == 2 and (force or v2_applies(xs[0], xs[2], xs[3], xs[4])) else 1
    got = run(selective_scan_triton, xs, gy, gh, version=used, **((launch or {}) if used == 2 else {}))
    ref_in = [x.detach().double().requires_grad_() for x in xs]
    ref = run(selective_scan_chunked, ref_in, gy.double(), gh.double())
    errs = {name: rel(a, r) for name, a, r in zip(("y", "h_last", *NAMES), got, ref)}
    nan = any(not torch.isfinite(t).all() for t in got)
    worst = max(errs.values())
    return dict(version=used, ok=not nan and worst <= TOLERANCE[dtype], worst=worst, errs=errs, nan=nan)


def cases(quick: bool, smoke: bool):
    if smoke:
        return [(1, 4, 37, 4, None, torch.float32, "bdl"), (2, 4, 20, 2, 2, torch.bfloat16, "bld"),
                (2, 4, 21, 2, None, torch.float32, "model")]
    out = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        out += [(2, 64, 1, 16, None, dtype, "bdl"), (2, 64, 63, 16, None, dtype, "bdl"),
                (2, 128, 1000, 16, 4, dtype, "bdl"), (1, 96, 4097, 16, None, dtype, "bdl"),
                (2, 64, 4097, 64, 2, dtype, "bdl"), (1, 32, 4097, 1, None, dtype, "bdl")]
    out += [(1, 1536, 4097, 16, None, torch.bfloat16, "bdl"), (1, 64, 2**16, 16, None, torch.float32, "bdl"),
            (1, 64, 2**16, 16, None, torch.bfloat16, "bdl"),
            # the model's layout, and batches where v2 runs one chunk and several
            (2, 256, 3001, 16, None, torch.float32, "bld"), (2, 256, 3001, 16, None, torch.bfloat16, "bld"),
            (8, 512, 1027, 16, None, torch.bfloat16, "bld"), (3, 160, 2500, 16, 5, torch.float32, "bdl"),
            # exactly the strides MambaMixer passes (model_layout.py), at the base model's width
            (2, 512, 3001, 16, None, torch.float32, "model"), (2, 512, 3001, 16, None, torch.bfloat16, "model"),
            (1, 512, 4097, 16, None, torch.bfloat16, "model")]
    if not quick:
        out += [(1, 16, 2**20, 16, None, torch.float32, "bdl"), (1, 16, 2**20, 16, None, torch.bfloat16, "bdl")]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--versions", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--quick", action="store_true", help="skip the 2^20 cases")
    ap.add_argument("--part", default="0/1", help="i/k: run every k-th case from the i-th (parallel processes)")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny cases on the CPU in Triton's interpreter")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--v2-launch", default="{}", help="JSON keywords of scan_v2.plan for every v2 case (a variant)")
    args = ap.parse_args()
    device = "cpu" if args.cpu_smoke else "cuda"
    buffers.POISON_OUTPUTS = True
    i, k = (int(x) for x in args.part.split("/"))
    todo = [(v, c) for v in args.versions for c in cases(args.quick, args.cpu_smoke)][i::k]
    failures, rows = 0, []
    print(f"{'ver':>3} {'b':>3} {'d':>5} {'l':>8} {'n':>3} {'g':>4} {'layout':>6} {'dtype':>9} {'worst rel err':>14} "
          f"{'tol':>7}  worst tensor", flush=True)
    for version, (b, d, l, n, groups, dtype, layout) in todo:
        r = check(version, b, d, l, n, groups, dtype, layout, device=device, force=args.cpu_smoke,
                  launch=json.loads(args.v2_launch))
        failures += not r["ok"]
        name = max(r["errs"], key=r["errs"].get)
        label = f"v{r['version']}" + ("" if r["version"] == version else "*")
        print(f"{label:>3} {b:>3} {d:>5} {l:>8} {n:>3} {str(groups or '-'):>4} {layout:>6} {str(dtype)[6:]:>9} "
              f"{r['worst']:>14.2e} {TOLERANCE[dtype]:>7.0e}  {name}{'  NaN!' if r['nan'] else ''}"
              f"{'' if r['ok'] else '  FAIL'}", flush=True)
        rows.append(dict(asked=version, shape=[b, d, l, n], groups=groups, dtype=str(dtype)[6:], layout=layout, **r))
    if not args.cpu_smoke and i == 0:
        print("error against length (fp32, b 1, d 32, n 16): must not grow with l")
        for version in args.versions:
            for l in [4097, 2**14, 2**16] + ([] if args.quick else [2**18, 2**20]):
                r = check(version, 1, 32, l, 16, None, torch.float32, seed=7, launch=json.loads(args.v2_launch))
                e = r["errs"]
                print(f"  v{r['version']} l={l:>8}  y {e['y']:.2e}  delta {e['delta']:.2e}  A {e['A']:.2e}  "
                      f"worst {r['worst']:.2e}", flush=True)
                rows.append(dict(asked=version, shape=[1, 32, l, 16], dtype="float32", length_check=True, **r))
    print(f"{len(todo) - failures} passed, {failures} failed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name() if device == "cuda" else "cpu (interpreter)",
                           torch=torch.__version__, v2_launch=json.loads(args.v2_launch), rows=rows), f, indent=1,
                      default=str)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
