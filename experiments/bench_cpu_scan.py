"""Forward + backward time of the chunked selective scan against the sequential definition on this CPU.

Run: python experiments/bench_cpu_scan.py [--threads 2 1] [--repeats 5] [--length 4096]
     python experiments/bench_cpu_scan.py --cpu-smoke --out /tmp/x.txt    # tiny sizes, seconds (CI)
Prints a table (one pair of rows per thread count) and writes it to experiments/results/bench_cpu_scan.txt.
Each timing is the best of --repeats runs (the minimum is the least disturbed by other processes sharing
the CPU); the sequential scan is slow, so it gets --ref-repeats runs. The 1-minute load average is printed
because a busy machine slows the multi-threaded large ops of the chunked scan far more than the sequential
scan's small ones.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mambadna.kernels import selective_scan_chunked, selective_scan_ref

RESULTS = Path(__file__).parent / "results" / "bench_cpu_scan.txt"


def make_inputs(b: int, d: int, l: int, n: int, seed: int = 0) -> list[torch.Tensor]:
    """Realistic ranges: delta ~ N(0, 1) before softplus (bias added), A = -exp(N(0, 1)); shared B and C."""
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(b, d, l, generator=gen),  # u
        torch.randn(b, d, l, generator=gen),  # delta
        -torch.exp(torch.randn(d, n, generator=gen)),  # A
        torch.randn(b, n, l, generator=gen),  # B
        torch.randn(b, n, l, generator=gen),  # C
        torch.randn(d, generator=gen),  # D
        torch.randn(b, d, l, generator=gen),  # z
        F.softplus(torch.randn(d, generator=gen)) - 1.0,  # delta_bias
    ]


def time_fwd_bwd(fn, inputs: list[torch.Tensor], repeats: int) -> tuple[float, float]:
    """Best forward and best backward wall time (seconds) over repeats."""
    best_f = best_b = float("inf")
    for _ in range(repeats):
        args = [x.clone().requires_grad_() for x in inputs]
        u, delta, A, B, C, D, z, delta_bias = args
        t0 = time.perf_counter()
        y = fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=True)
        t1 = time.perf_counter()
        y.backward(torch.ones_like(y))
        t2 = time.perf_counter()
        best_f, best_b = min(best_f, t1 - t0), min(best_b, t2 - t1)
    return best_f, best_b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ref-repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes, one repeat: checks the script runs")
    args = parser.parse_args()
    if args.cpu_smoke:
        args.threads, args.repeats, args.ref_repeats = [1], 1, 1
        args.batch, args.d, args.length, args.d_state = 1, 4, 64, 4
        if args.out == RESULTS:
            raise SystemExit("--cpu-smoke would overwrite the committed results: give --out")
    b, d, l, n = args.batch, args.d, args.length, args.d_state
    inputs = make_inputs(b, d, l, n)
    lines = [
        f"selective scan fwd+bwd, fp32, b={b} d={d} l={l} n={n}, D, z, delta_bias, softplus; "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs ({platform.processor() or '?'})",
        f"best of {args.repeats} (chunked) / {args.ref_repeats} (sequential) runs",
        f"{'threads':>7}  {'backend':<12}{'forward s':>11}{'backward s':>11}{'total s':>10}{'speed-up':>10}{'load':>7}",
    ]
    for threads in args.threads:
        torch.set_num_threads(threads)
        time_fwd_bwd(selective_scan_chunked, inputs, 1)  # warm-up: first-call allocations, thread start-up
        chunked = time_fwd_bwd(selective_scan_chunked, inputs, args.repeats)
        ref = time_fwd_bwd(selective_scan_ref, inputs, args.ref_repeats)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        for name, (f, bw) in (("sequential", ref), ("chunked", chunked)):
            speed_up = sum(ref) / (f + bw)
            lines.append(f"{threads:>7}  {name:<12}{f:>11.3f}{bw:>11.3f}{f + bw:>10.3f}{speed_up:>9.1f}x{load:>7.2f}")
        print("\n".join(lines[-2:]), flush=True)
    text = "\n".join(lines)
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
