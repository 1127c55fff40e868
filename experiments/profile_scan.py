"""Per-kernel time, registers and spills of the Triton scan for several launch shapes (a tuning aid, GPU only).

    python experiments/profile_scan.py

Times come from torch.profiler's CUDA activity over a few fwd+bwd calls; registers and spills from the compiled
kernels. Results went into experiments/BENCHMARKS.md's notes on how the launch shape was chosen.
"""

from __future__ import annotations

import collections

import torch
from torch.profiler import ProfilerActivity, profile

from mambadna.kernels import scan_triton
from mambadna.kernels.scan_triton import selective_scan_triton

KERNELS = ("_fwd_chunk_summary", "_carry_scan", "_fwd_chunk_scan", "_bwd_chunk_summary", "_bwd_chunk_scan")
CONFIGS = [(32, 32, 2, None, None), (32, 32, 2, None, 2), (32, 32, 2, 2, None), (32, 32, 2, None, 4),
           (64, 32, 4, None, 2), (32, 64, 4, None, 2), (64, 32, 2, None, None)]
SHAPES = [(1, 512, 2**20, 16), (8, 1536, 4096, 16)]
stats: dict[str, tuple[int, int]] = {}


def _record(name, jit_fn):
    run = jit_fn.run

    def wrapped(*args, **kwargs):
        k = run(*args, **kwargs)
        if k is not None and hasattr(k, "n_regs"):
            stats[name] = (k.n_regs, k.n_spills)
        return k

    jit_fn.run = wrapped


for _name in KERNELS:
    _record(_name, getattr(scan_triton, _name))


def inputs(b, d, l, n):
    bf = torch.bfloat16
    mk = lambda *s: torch.randn(*s, device="cuda").to(bf).requires_grad_()  # noqa: E731
    u, delta, z = mk(b, d, l), mk(b, d, l), mk(b, d, l)
    B, C = mk(b, n, l), mk(b, n, l)
    A = (-torch.exp(torch.randn(d, n, device="cuda") * 0.5)).requires_grad_()
    D = torch.randn(d, device="cuda").requires_grad_()
    bias = torch.randn(d, device="cuda").requires_grad_()
    return (u, delta, A, B, C, D, z, bias), torch.randn(b, d, l, device="cuda").to(bf)


for shape in SHAPES:
    xs, dy = inputs(*shape)
    for T, BD, W, S, U in CONFIGS:
        def step():
            y = selective_scan_triton(*xs[:7], delta_bias=xs[7], delta_softplus=True, chunk_size=T, block_d=BD,
                                      num_warps=W, stages=S, unroll=U)
            torch.autograd.grad(y, xs, dy)
        try:
            step()
        except Exception as exc:
            print(shape, (T, BD, W, S, U), "failed:", str(exc)[:300])
            continue
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                step()
            torch.cuda.synchronize()
        times = collections.defaultdict(float)
        for ev in prof.key_averages():
            for k in KERNELS:
                if ev.key.startswith(k):
                    times[k] += ev.device_time_total / 3 / 1e3
            if not any(ev.key.startswith(k) for k in KERNELS):
                times["other"] += ev.device_time_total / 3 / 1e3
        row = "  ".join(f"{k.strip('_')} {times[k]:.2f}ms r{stats.get(k, ('?', '?'))[0]}/s{stats.get(k, ('?', '?'))[1]}"
                        for k in KERNELS)
        print(f"{shape} T{T} BD{BD} W{W} S{S} U{U}: {row}  other {times['other']:.2f}ms", flush=True)
