"""Time the selective scans on one GPU in one run: ours (the dispatcher's pick, v2, and v1), mamba_ssm's CUDA kernel.

    python experiments/bench_scan.py                      # writes experiments/results/bench_scan.json
    python experiments/bench_scan.py --warm-only --part 1/4   # compile (run once) a quarter of the work, no timing
    python experiments/bench_scan.py --cpu-smoke --out /tmp/b.json   # tiny shape, Triton's interpreter, seconds

Configuration as in issue 13: bf16 u/Δ/z/B/C, z gate, softplus Δ with delta_bias, shared B/C, d_state 16, inputs
(b, d, l) contiguous. Every figure is a median of `triton.testing.do_bench` (events). "fwd+bwd" includes the
forward that saves for the backward; peak = max_memory_allocated over one fwd+bwd, inputs and gradients included.
floor_ms = max(minimal HBM bytes / copy bandwidth, 2·b·d·l·n exp2 / exp2 rate), both rates measured in this run:
bytes are fwd: read u, Δ, z, B, C, write y; bwd: read u, Δ, z, B, C, dy, write du, dΔ, dz, dB, dC (bf16); the
exps are one per element in the forward and one in the backward's recomputation. mamba_ssm is imported as
`mamba_ssm.ops.selective_scan_interface.selective_scan_fn` when present (a measuring instrument, not a dependency).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

if "--cpu-smoke" in sys.argv:  # the interpreter must be chosen before triton is imported
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from mambadna.kernels.gpu import pick_version, selective_scan_triton  # noqa: E402

SHAPES = [(1, 512, 2**20, 16), (8, 512, 2**17, 16), (8, 1536, 4096, 16), (32, 2048, 2048, 16)]
CHANNELS_LAST = {(1, 512, 2**20, 16), (8, 1536, 4096, 16)}  # also timed with the model's (b, l, d) views
# v2 launch shapes tried besides the default plan (keywords of scan_v2.plan); the JSON keeps every one
V2_CONFIGS = [dict(), dict(sm_warps=8), dict(unroll=False), dict(block_d=64), dict(fma_exps=3)]
RESULTS = os.path.join(os.path.dirname(__file__), "results", "bench_scan.json")
# shapes of (u, A, B, C) the dispatcher's choice is read from (it depends on n and d, which all SHAPES share)
DUMMY = (torch.empty(1, 512, 1), torch.empty(512, 16), torch.empty(1, 16, 1), torch.empty(1, 16, 1))


@triton.jit
def _exp2_burn(p_x, p_out, ITERS: tl.constexpr, BLOCK: tl.constexpr):
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    a = tl.load(p_x + o)
    b, c, d = a + 1.0, a + 2.0, a + 3.0
    for _ in range(ITERS):  # four independent chains so throughput, not latency, bounds it
        a = tl.exp2(a * -0.5)
        b = tl.exp2(b * -0.5)
        c = tl.exp2(c * -0.5)
        d = tl.exp2(d * -0.5)
    tl.store(p_out + o, a + b + c + d)


def bench(fn, rep):
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=rep, return_mode="median")


def measure_rates():
    n, iters, block = 2**24, 256, 1024
    x = torch.rand(n, device="cuda")
    out = torch.empty_like(x)
    exp_rate = 4 * iters * n / (bench(lambda: _exp2_burn[(n // block,)](x, out, ITERS=iters, BLOCK=block), 200) * 1e-3)
    src = torch.empty(2**30, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    bw = 2 * src.numel() / (bench(lambda: dst.copy_(src), 200) * 1e-3)
    return bw, exp_rate


def make_inputs(b, d, l, n, device, seed=0, layout="bdl"):
    """bf16 inputs; layout "bld": u, Δ, z, dy, B, C as (b, ·, l) views of (b, l, ·) storage (the model's)."""
    g = torch.Generator(device=device).manual_seed(seed)
    bf = torch.bfloat16

    def r(*s, scale=1.0, shift=0.0, dt=bf):
        return (torch.randn(*s, device=device, generator=g) * scale + shift).to(dt).requires_grad_()

    def seq(rows, scale=1.0, shift=0.0):
        if layout == "bld":
            return r(b, l, rows, scale=scale, shift=shift).detach().transpose(1, 2).requires_grad_()
        return r(b, rows, l, scale=scale, shift=shift)

    u, delta, z = seq(d), seq(d, scale=0.5, shift=-1.0), seq(d)
    A = (-torch.exp(torch.randn(d, n, device=device, generator=g) * 0.5)).requires_grad_()
    B, C = seq(n), seq(n)
    D, bias = r(d, dt=torch.float32), r(d, scale=0.3, dt=torch.float32)
    dy = torch.randn(b, d, l, device=device, generator=g).to(bf)
    if layout == "bld":
        dy = dy.transpose(1, 2).contiguous().transpose(1, 2)
    return (u, delta, A, B, C, D, z, bias), dy


def time_scan(fn, xs, dy, rep):
    """Median fwd ms, median fwd+bwd ms, peak GiB of one fwd+bwd."""
    u, delta, A, B, C, D, z, bias = xs

    def fwd():
        return fn(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True)

    def fwd_bwd():
        return torch.autograd.grad(fwd(), xs, dy)

    if rep == 0:  # warm-up only: compile
        fwd_bwd()
        return None
    t_fwd, t_all = bench(fwd, rep), bench(fwd_bwd, rep)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fwd_bwd()
    torch.cuda.synchronize()
    return t_fwd, t_all, torch.cuda.max_memory_allocated() / 2**30


def sdpa_ms(batch, l, heads, rep):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(batch, heads, l, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    go = torch.randn(batch, heads, l, 64, device="cuda", dtype=torch.bfloat16)

    def run():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return torch.autograd.grad(o, (q, k, v), go)

    return bench(run, rep)


def variants(mamba):
    """(name, callable) of everything timed per shape; the first is what the dispatcher runs by default."""
    out = [("ours", lambda *a, **k: selective_scan_triton(*a, **k))]
    if pick_version(*DUMMY) != 2:  # the dispatcher runs v1: time v2's default plan as well
        out.append(("v2", lambda *a, **k: selective_scan_triton(*a, version=2, **k)))
    out += [(f"v2 {json.dumps(c)}", (lambda c: lambda *a, **k: selective_scan_triton(*a, version=2, **c, **k))(c))
            for c in V2_CONFIGS[1:]]
    if pick_version(*DUMMY) != 1:
        out.append(("v1", lambda *a, **k: selective_scan_triton(*a, version=1, **k)))
    if mamba is not None:
        out.append(("mamba_ssm", mamba))
    return out


def smoke(out_path):
    """CPU: the default dispatch (v2 on a tiny shape in the interpreter) and v1, one fwd+bwd each, wall clock."""
    b, d, l, n = 1, 4, 40, 4
    xs, dy = make_inputs(b, d, l, n, "cpu")
    rows = []
    for name, fn in (("v2", lambda *a, **k: selective_scan_triton(*a, version=2, **k)),
                     ("v1", lambda *a, **k: selective_scan_triton(*a, version=1, chunk_size=16, **k))):
        t0 = time.perf_counter()
        u, delta, A, B, C, D, z, bias = xs
        torch.autograd.grad(fn(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True), xs, dy)
        rows.append(dict(shape=[b, d, l, n], name=name, wall_s=time.perf_counter() - t0))
        print(rows[-1], flush=True)
    with open(out_path, "w") as f:
        json.dump(dict(card="cpu (interpreter)", same_run=True, rows=rows), f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=RESULTS)
    ap.add_argument("--shapes", type=int, nargs="*", help="indices into SHAPES (default all)")
    ap.add_argument("--rep", type=int, default=300, help="do_bench repetition time, ms")
    ap.add_argument("--warm-only", action="store_true", help="run every variant once (compiles), time nothing")
    ap.add_argument("--part", default="0/1", help="i/k: with --warm-only, every k-th (shape, variant) from the i-th")
    ap.add_argument("--profile", action="store_true", help="per-kernel times of the default variant (torch.profiler)")
    ap.add_argument("--cpu-smoke", action="store_true", help="a tiny shape on the CPU (Triton's interpreter)")
    args = ap.parse_args()
    if args.cpu_smoke:
        return smoke(args.out)
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as mamba
    except ImportError:
        mamba = None
    shapes = [SHAPES[i] for i in args.shapes] if args.shapes else SHAPES
    if args.warm_only:
        i, k = (int(x) for x in args.part.split("/"))
        jobs = [(s, v, "bdl") for s in shapes for v in variants(None)]
        jobs += [(s, variants(None)[0], "bld") for s in shapes if s in CHANNELS_LAST]
        for shape, (name, fn), layout in jobs[i::k]:
            xs, dy = make_inputs(*shape, "cuda", layout=layout)
            t0 = time.time()
            time_scan(fn, xs, dy, 0)
            print(f"warm {shape} {name}: {time.time() - t0:.1f} s", flush=True)
            del xs, dy
            torch.cuda.empty_cache()
        return
    bw, exp_rate = measure_rates()
    head = dict(card=torch.cuda.get_device_name(), date=str(datetime.date.today()), torch=torch.__version__,
                triton=triton.__version__, python=platform.python_version(), same_run=True,
                mamba_ssm=mamba is not None, copy_tb_s=bw / 1e12, exp2_per_s=exp_rate, rows=[])
    print(json.dumps({k: v for k, v in head.items() if k != "rows"}), flush=True)
    for shape in shapes:
        b, d, l, n = shape
        xs, dy = make_inputs(*shape, "cuda")
        row = dict(shape=list(shape), variants={})
        for name, fn in variants(mamba):
            try:
                t_f, t_all, peak = time_scan(fn, xs, dy, args.rep)
                row["variants"][name] = dict(fwd_ms=t_f, fwd_bwd_ms=t_all, peak_gib=peak)
            except Exception as exc:  # a launch shape that does not fit is recorded, not fatal
                row["variants"][name] = dict(error=f"{type(exc).__name__}: {str(exc)[:200]}")
            print(shape, name, row["variants"][name], flush=True)
            torch.cuda.empty_cache()
        if shape in CHANNELS_LAST:
            del xs, dy
            xs, dy = make_inputs(*shape, "cuda", layout="bld")
            t_f, t_all, peak = time_scan(variants(None)[0][1], xs, dy, args.rep)
            row["variants"]["ours, bld"] = dict(fwd_ms=t_f, fwd_bwd_ms=t_all, peak_gib=peak)
            print(shape, "ours, bld", row["variants"]["ours, bld"], flush=True)
        ours, ref = row["variants"]["ours"], row["variants"].get("mamba_ssm", {})
        bytes_min = 22 * b * d * l + 12 * b * n * l
        row.update(
            ours_fwd_ms=ours.get("fwd_ms"), ours_fwd_bwd_ms=ours.get("fwd_bwd_ms"), ours_peak_gib=ours.get("peak_gib"),
            mamba_ssm_fwd_ms=ref.get("fwd_ms"), mamba_ssm_fwd_bwd_ms=ref.get("fwd_bwd_ms"),
            mamba_ssm_peak_gib=ref.get("peak_gib"),
            floor_ms=max(bytes_min / bw, 2 * b * d * l * n / exp_rate) * 1e3,
        )
        if args.profile:
            row["ours_kernels_ms"] = profile(variants(None)[0][1], xs, dy)
            print(shape, "kernels", row["ours_kernels_ms"], flush=True)
        head["rows"].append(row)
        del xs, dy
        torch.cuda.empty_cache()
    head["flash_attention_fwd_bwd_ms"] = {f"b{bt} l{ll} h{h} (width {h * 64})": sdpa_ms(bt, ll, h, args.rep)
                                          for bt, ll, h in ((8, 4096, 12), (32, 2048, 16))}
    with open(args.out, "w") as f:
        json.dump(head, f, indent=1)
    for row in head["rows"]:
        r = row
        sp = (f"{r['mamba_ssm_fwd_bwd_ms'] / r['ours_fwd_bwd_ms']:.2f}x fwd+bwd, "
              f"{r['mamba_ssm_fwd_ms'] / r['ours_fwd_ms']:.2f}x fwd" if r["mamba_ssm_fwd_ms"] and r["ours_fwd_ms"]
              else "-")
        print(f"{r['shape']}: ours {r['ours_fwd_ms']} / {r['ours_fwd_bwd_ms']} ms, peak {r['ours_peak_gib']}; "
              f"mamba_ssm {r['mamba_ssm_fwd_ms']} / {r['mamba_ssm_fwd_bwd_ms']}, peak {r['mamba_ssm_peak_gib']}; "
              f"floor {r['floor_ms']:.2f}; {sp}")


def profile(fn, xs, dy):
    """Device ms per kernel name over one fwd+bwd (mean of 3)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    u, delta, A, B, C, D, z, bias = xs
    def step():
        return torch.autograd.grad(fn(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True), xs, dy)

    step()
    torch.cuda.synchronize()
    with tprofile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    out = {}
    for ev in prof.key_averages():
        if ev.device_time_total > 0:
            out[ev.key[:60]] = round(ev.device_time_total / 3 / 1e3, 4)
    return dict(sorted(out.items(), key=lambda kv: -kv[1])[:12])


if __name__ == "__main__":
    main()
