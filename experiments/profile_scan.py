"""Per-kernel device time of the Triton scans over one fwd+bwd, with each kernel's registers and spills.

    python experiments/profile_scan.py [--version 2] [--shape 1 512 1048576 16] [--out log.json]   # a GPU
    python experiments/profile_scan.py --cpu-smoke        # tiny shape, Triton's interpreter: times are wall clock

Times come from torch.profiler's CUDA activity (mean of 3 fwd+bwd); registers and spills from the compiled
kernels that the launches produced (Triton's per-device kernel cache). A tuning aid: BENCHMARKS.md's notes on what
bounds each kernel cite its output.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

if "--cpu-smoke" in sys.argv:  # the interpreter must be chosen before triton is imported
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

from mambadna.kernels import scan_triton, scan_v2_bwd, scan_v2_fwd  # noqa: E402
from mambadna.kernels.gpu import selective_scan_triton  # noqa: E402

KERNELS = {1: {"_fwd_chunk_summary": scan_triton, "_carry_scan": scan_triton, "_fwd_chunk_scan": scan_triton,
               "_bwd_chunk_summary": scan_triton, "_bwd_chunk_scan": scan_triton},
           2: {"_fwd_scan": scan_v2_fwd, "_carry": scan_v2_fwd, "_bwd_summary": scan_v2_bwd,
               "_bwd_scan": scan_v2_bwd}}


def inputs(b, d, l, n, device):
    mk = lambda *s: torch.randn(*s, device=device).to(torch.bfloat16).requires_grad_()  # noqa: E731
    u, delta, z, B, C = mk(b, d, l), mk(b, d, l), mk(b, d, l), mk(b, n, l), mk(b, n, l)
    A = (-torch.exp(torch.randn(d, n, device=device) * 0.5)).requires_grad_()
    D, bias = torch.randn(d, device=device).requires_grad_(), torch.randn(d, device=device).requires_grad_()
    return (u, delta, A, B, C, D, z, bias), torch.randn(b, d, l, device=device).to(torch.bfloat16)


def registers(version):
    """{kernel: [(regs, spills), ...]} of every compiled specialization (GPU only)."""
    out = {}
    for name, mod in KERNELS[version].items():
        fn = getattr(mod, name)
        for cache in getattr(fn, "device_caches", {}).values():
            for k in cache[0].values():
                if hasattr(k, "n_regs"):
                    out.setdefault(name, []).append((k.n_regs, k.n_spills))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--version", type=int, default=2)
    ap.add_argument("--shape", type=int, nargs=4, default=[1, 512, 2**20, 16])
    ap.add_argument("--launch", default="{}", help="JSON launch keywords (scan_v2.plan or v1's)")
    ap.add_argument("--out", help="also write the result here (JSON)")
    ap.add_argument("--cpu-smoke", action="store_true", help="a tiny shape on the CPU (Triton's interpreter)")
    args = ap.parse_args()
    shape = [1, 4, 40, 4] if args.cpu_smoke else args.shape
    device = "cpu" if args.cpu_smoke else "cuda"
    launch = json.loads(args.launch)
    if args.cpu_smoke and args.version == 1:
        launch.setdefault("chunk_size", 16)
    xs, dy = inputs(*shape, device)

    def step():
        y = selective_scan_triton(*xs[:7], delta_bias=xs[7], delta_softplus=True, version=args.version, **launch)
        torch.autograd.grad(y, xs, dy)

    step()  # compiles
    result = dict(shape=shape, version=args.version, launch=launch)
    if args.cpu_smoke:
        t0 = time.perf_counter()
        step()
        result["wall_s"] = time.perf_counter() - t0
    else:
        from torch.profiler import ProfilerActivity, profile

        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                step()
            torch.cuda.synchronize()
        times = collections.defaultdict(float)
        for ev in prof.key_averages():
            key = next((k for k in KERNELS[args.version] if ev.key.startswith(k)), "other")
            times[key] += ev.device_time_total / 3 / 1e3
        result.update(device=torch.cuda.get_device_name(), kernels_ms=dict(times), registers=registers(args.version))
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
