"""The model's causal depthwise conv alone, forward and forward+backward, under bf16 autocast as the model trains:
PyTorch's (`kernels.causal_conv` with `conv_backend` torch, the model's own path: F.conv1d, then SiLU) against
kernels/conv_triton.py at its default launch and at launch variants, on the 3.5M "base" model's shape (d_inner 512,
K 4, bf16, x a channels-last view of in_proj's output).

The 12-07 14:52 profile put the Triton backward at 5.6 ms a step of that model at 2^16 against its forward's 0.5
(experiments/results/gpu_scan_h100_2026-12-07g/): this times the variants that may close it, one launch keyword
each (`causal_conv1d`'s `launch`), in the same run as the PyTorch conv.

    python experiments/bench_conv.py --out DIR [--variants JSON] [--log2-lengths 16,18]
writes DIR/bench_conv.json: per length, per variant, median fwd and fwd+bwd ms, and the largest relative difference
(norm) of y and of every gradient from PyTorch's (bf16 rounding: PyTorch's conv runs in bf16, the kernels in fp32).
`--cpu-smoke`: tiny, in Triton's interpreter (CI).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from bench_scan import bench  # noqa: E402
from mambadna.kernels import causal_conv  # noqa: E402
from mambadna.kernels.conv_triton import causal_conv1d  # noqa: E402

D_INNER, K = 512, 4  # the 3.5M "base" model's mixer (d_model 256, expand 2, d_conv 4)
VARIANTS = [{}, {"dw_rows": False}]  # the default (dw_rows since 12-07 16:28) and the launch it replaced


def inputs(b, d, l, device):
    g = torch.Generator(device=device).manual_seed(0)
    # the mixer's x half: a (b, d, l) view of a (b, l, 2d) projection's first d channels
    x = torch.randn(b, l, 2 * d, device=device, generator=g).to(torch.bfloat16).transpose(1, 2)[:, :d]
    weight = (torch.randn(d, K, device=device, generator=g) / K**0.5).requires_grad_()
    bias = torch.randn(d, device=device, generator=g).requires_grad_()
    dy = torch.randn(b, l, d, device=device, generator=g).to(torch.bfloat16).transpose(1, 2)
    return x.detach().requires_grad_(), weight, bias, dy


def timed(fn, rep, cuda):
    if not cuda:  # --cpu-smoke: one call, wall clock
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    return bench(fn, rep)


def measure(l, variants, rep, device):
    x, weight, bias, dy = inputs(1, D_INNER, l, device)
    leaves = (x, weight, bias)
    cuda = device == "cuda"
    # the model's own torch path (kernels.causal_conv, as MambaMixer.conv calls it with conv_backend torch)
    runs = {"torch": lambda: causal_conv(x, weight[:, None], bias, None, True, backend="torch")[0]}
    runs.update({f"triton {json.dumps(v)}": (lambda v: lambda: causal_conv1d(x, weight, bias, activation="silu",
                                                                             **v))(v) for v in variants})
    want = None
    out = {}
    for name, run in runs.items():
        def fwd(run=run):
            with torch.autocast(device, dtype=torch.bfloat16):  # as the model trains: F.conv1d runs in bf16
                return run()

        got = (fwd().detach(), *torch.autograd.grad(fwd(), leaves, dy))
        if want is None:
            want = got
        diff = max(((g.float() - w.float()).norm() / w.float().norm().clamp_min(1e-30)).item()
                   for g, w in zip(got, want))
        out[name] = {"fwd_ms": timed(fwd, rep, cuda),
                     "fwd_bwd_ms": timed(lambda: torch.autograd.grad(fwd(), leaves, dy), rep, cuda),
                     "max_rel_diff_vs_torch": diff}
        print(f"l=2^{l.bit_length() - 1} {name}: {out[name]}", flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default=json.dumps(VARIANTS), help="JSON list of causal_conv1d launch keywords")
    parser.add_argument("--log2-lengths", default="16,18")
    parser.add_argument("--rep", type=int, default=100, help="do_bench's rep (ms)")
    parser.add_argument("--cpu-smoke", action="store_true")
    args = parser.parse_args(argv)
    device = "cpu" if args.cpu_smoke else "cuda"
    lengths = [2**6] if args.cpu_smoke else [2 ** int(v) for v in args.log2_lengths.split(",")]
    variants = json.loads(args.variants)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "commit": os.environ.get("COMMIT"), "torch": torch.__version__,
              "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (interpreter)",
              "shape": {"b": 1, "d": D_INNER, "k": K, "dtype": "bf16", "x": "channels-last view"},
              "rows": {str(l): measure(l, variants, args.rep, device) for l in lengths}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_conv.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
