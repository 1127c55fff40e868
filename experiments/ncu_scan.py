"""One v2 scan fwd+bwd at a shape, run WARMUP + 1 times: the program `ncu` profiles in experiments/gpu_scan.sh
(phase 5), so that the kernels' stall reasons, issue rates and memory traffic say where `_bwd_scan`'s time goes
(the torch profiler only gives each kernel's total).

    ncu --clock-control none -k regex:'_bwd_scan|_fwd_scan' --launch-skip 2 --launch-count 2 \\
        python3 experiments/ncu_scan.py --shape 1,512,262144,16

The first WARMUP runs compile and are skipped by `--launch-skip` (each runs `_fwd_scan` and `_bwd_scan` once; long
shapes add chunk summaries under other kernel names). `--cpu-smoke`: a tiny shape in Triton's interpreter (CI).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from bench_scan import make_inputs  # noqa: E402
from mambadna.kernels.gpu import selective_scan_triton  # noqa: E402

WARMUP = 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="1,512,262144,16", help="b,d,l,n")
    parser.add_argument("--layout", default="bdl", choices=("bdl", "model"))
    parser.add_argument("--cpu-smoke", action="store_true", help="shape 1,32,37,4 on the CPU (TRITON_INTERPRET=1)")
    args = parser.parse_args()
    b, d, l, n = (1, 32, 37, 4) if args.cpu_smoke else (int(x) for x in args.shape.split(","))
    device = "cpu" if args.cpu_smoke else "cuda"
    xs, dy = make_inputs(b, d, l, n, device, layout=args.layout)
    u, delta, A, B, C, D, z, bias = xs
    for _ in range(WARMUP + 1):
        y = selective_scan_triton(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True, version=2)
        torch.autograd.grad(y, xs, dy)
    if device == "cuda":
        torch.cuda.synchronize()
    print(f"ran v2 fwd+bwd {WARMUP + 1} times at {(b, d, l, n)} {args.layout}")


if __name__ == "__main__":
    main()
