"""Where one training step of the 3.5M "base" MambaLM goes, kernel by kernel (issue #20's whole-model target).

    python experiments/profile_model.py --out experiments/results/profile_model     # GPU: 2^16 and 2^18, ~1 min
    python experiments/profile_model.py --out /tmp/prof --cpu-smoke                   # tiny model on the CPU (CI)

The step is bench_model.py's plain one (batch 1, bf16 autocast, fp32 weights, AdamW, the model's `scan_kernel`),
warmed up, then profiled over STEPS steps with torch.profiler; `--chunked-log2` adds bench_model.py's chunked step
(the package's chunked loss, 2^16-base chunks, each recomputed in the backward) at those lengths, where the gap
between wall time and kernel time shows what the chunk loop costs on the host. Every device kernel (on the CPU:
every top-level op) falls in one group by its name (GROUPS, first match): the scan, the depthwise convolution,
matrix products, normalisation, the loss, the optimizer, copies and layout changes, other element-wise work. Writes
profile_model.json (per length: ms a step of every group, and of the TOP slowest kernels with their group) and
profile_model.md (the same as tables), and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import Clock, _commit, dna, settings_from_args, train_step  # noqa: E402

from mambadna.kernels.choice import CONV_BACKENDS, NORM_BACKENDS, SCAN_KERNELS  # noqa: E402
from mambadna.model import MambaLM  # noqa: E402

STEPS, TOP = 3, 25
# (group, pattern on the lower-cased kernel name); the first match wins, so the specific names come first
GROUPS = [
    ("scan", r"_fwd_scan|_bwd_scan|_fwd_summary|_bwd_summary|_carry|selective_?scan|scan_kernel|_stage"),
    ("conv1d", r"conv|depthwise|winograd|implicit_convolve"),
    ("matmul", r"gemm|matmul|cutlass|sm90_xmma|ampere_|cublas|::b?mm$|addmm|linear|nvjet"),
    ("norm", r"rsqrt|norm|pow"),
    ("loss", r"softmax|nll|cross_entropy|log_softmax"),
    ("optimizer", r"adam|multi_tensor|foreach|_amp_update|lerp|addcdiv|addcmul"),
    ("copy / layout", r"copy|cat|transpose|contiguous|clone|fill|zero|index|gather|scatter|pad|slice|where"),
    ("element-wise", r"elementwise|silu|sigmoid|exp|softplus|mul|add|sum|reduce|vectorized"),
]


def group_of(name: str) -> str:
    low = name.lower()
    return next((g for g, pat in GROUPS if re.search(pat, low)), "other")


def profile_step(model, opt, l: int, clock: Clock, mode: str = "plain") -> dict:
    """ms a step per group and the slowest kernels, over STEPS profiled steps after one warm-up step."""
    ids = dna(1, l, clock.s.device, seed=l)
    train_step(model, opt, ids, mode, clock, False)
    clock.sync()
    cuda = clock.s.device.type == "cuda"
    began = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]) as prof:
        for _ in range(STEPS):
            train_step(model, opt, ids, mode, clock, False)
        clock.sync()
    step_ms = (time.perf_counter() - began) * 1e3 / STEPS
    per_name = {}  # key_averages: one entry a kernel (op) name, summed over its calls
    for e in prof.key_averages():
        us = e.self_device_time_total if cuda else e.self_cpu_time_total
        if us > 0 and (cuda or not e.key.startswith("ProfilerStep")):
            per_name[e.key] = us / 1e3 / STEPS
    group = {name: group_of(name) for name in per_name}
    groups: dict[str, float] = {}
    for name, ms in per_name.items():
        groups[group[name]] = groups.get(group[name], 0.0) + ms
    top = sorted(per_name.items(), key=lambda kv: -kv[1])[:TOP]
    return dict(l=l, mode=mode, chunk_bp=clock.s.chunk_bp if mode == "chunked" else None, step_ms=step_ms,
                tok_s=l / step_ms * 1e3, kernel_ms=sum(per_name.values()),
                groups=dict(sorted(groups.items(), key=lambda kv: -kv[1])),
                top=[dict(name=n[:120], group=group[n], ms=ms) for n, ms in top])


def report(rows: list[dict], env: str) -> str:
    out = [f"# One training step of the 3.5M model, by kernel group\n\n{env}\n"]
    for r in rows:
        mode = f", chunked in 2^{r['chunk_bp'].bit_length() - 1}" if r.get("mode") == "chunked" else ""
        out += [f"## l = 2^{r['l'].bit_length() - 1}{mode}: {r['step_ms']:.1f} ms a step (wall, "
                f"{r['tok_s'] / 1e6:.3f} M tokens/s), {r['kernel_ms']:.1f} ms in kernels\n",
                "| group | ms a step | share of kernel time |",
                "|---|---|---|"]
        out += [f"| {g} | {ms:.2f} | {ms / r['kernel_ms']:.0%} |" for g, ms in r["groups"].items()]
        out += ["", "| kernel | group | ms a step |", "|---|---|---|"]
        out += [f"| `{k['name']}` | {k['group']} | {k['ms']:.3f} |" for k in r["top"]]
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for profile_model.{json,md}")
    parser.add_argument("--cpu-smoke", action="store_true", help="the tiny model and lengths on the CPU")
    parser.add_argument("--log2-lengths", default=None, help="lengths as log2 (default 16,18; --cpu-smoke: 8)")
    parser.add_argument("--chunked-log2", default="", help="lengths (log2) also profiled chunked, e.g. 20 "
                        "(--cpu-smoke: 10, in bench_model.py's smoke chunks of 2^7)")
    parser.add_argument("--scan-kernel", default="auto", choices=SCAN_KERNELS, help="the model's setting")
    parser.add_argument("--conv-backend", default="torch", choices=CONV_BACKENDS,
                        help="the model's setting (torch: nn.Conv1d then SiLU; triton: kernels/conv_triton.py)")
    parser.add_argument("--norm-backend", default="torch", choices=NORM_BACKENDS,
                        help="the model's setting (torch: the eager RMSNorm; triton: kernels/norm_triton.py)")
    parser.add_argument("--json-name", default="profile_model", help="the output files' name (.json, .md)")
    args = parser.parse_args()
    args.quick, args.chunk_bp, args.step_limit_s, args.budget_s = True, 2**16, 60.0, 1e9  # settings_from_args'
    s = settings_from_args(args)
    lengths = [2 ** int(k) for k in (args.log2_lengths or ("8" if args.cpu_smoke else "16,18")).split(",")]
    clock = Clock(s)
    config = s.models["base"]
    config.scan_kernel, config.conv_backend = args.scan_kernel, args.conv_backend
    config.norm_backend = args.norm_backend
    model = MambaLM(config).to(s.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    device = torch.cuda.get_device_name() if s.device.type == "cuda" else "CPU"
    env = (f"device {device}, torch {torch.__version__}, scan_kernel {args.scan_kernel}, conv_backend "
           f"{args.conv_backend}, norm_backend {args.norm_backend}, autocast {s.amp}, "
           f"{STEPS} profiled steps, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {_commit()}")
    print(env, flush=True)
    rows = [profile_step(model, opt, l, clock) for l in lengths]
    rows += [profile_step(model, opt, 2 ** int(k), clock, "chunked") for k in args.chunked_log2.split(",") if k]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.json_name}.json").write_text(json.dumps(dict(env=env, rows=rows), indent=1))
    text = report(rows, env)
    (args.out / f"{args.json_name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
