"""Time the selective scans on one GPU in one run: ours (v1 and v2, and which one "auto" picks) and mamba_ssm's kernel.

    python experiments/bench_scan.py                      # writes experiments/results/bench_scan.json
    python experiments/bench_scan.py --warm-only --part 1/4   # compile (run once) a quarter of the work, no timing
    python experiments/bench_scan.py --cpu-smoke --out /tmp/b.json   # tiny shape, Triton's interpreter, seconds

Configuration as in issue 13: bf16 u/Δ/z/B/C, z gate, softplus Δ with delta_bias, shared B/C, d_state 16, in two
layouts: "bdl" = (b, d, l) contiguous (what mamba_ssm's own Mamba block passes) and "model" = the strides mambadna's
MambaMixer hands the scan (experiments/model_layout.py captures them from a real mixer: views of its linear layers'
(b, l, ·) outputs; dy a (b, d, l) view of (b, l, d) storage, as out_proj's backward delivers it). Every
figure is a median of `triton.testing.do_bench` (events). "fwd+bwd" includes the forward that saves for the
backward; peak = max_memory_allocated over one fwd+bwd, inputs and gradients included. With --rounds 2 every
variant is timed twice, interleaved with the others, so the spread between rounds shows the noise.
floor_ms = max(minimal HBM bytes / copy bandwidth, 2·b·d·l·n exp2 / exp2 rate), both rates measured in this run:
bytes are fwd: read u, Δ, z, B, C, write y; bwd: read u, Δ, z, B, C, dy, write du, dΔ, dz, dB, dC (bf16); the
exps are one per element in the forward and one in the backward's recomputation. mamba_ssm is imported as
`mamba_ssm.ops.selective_scan_interface.selective_scan_fn` when present (a measuring instrument, not a dependency);
it copies strided inputs to (b, d, l) first, so its fair figure is the "bdl" one (its own Mamba block computes the
projections in that layout).
The JSON is rewritten after every shape, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

if "--cpu-smoke" in sys.argv:  # the interpreter must be chosen before triton is imported
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from mambadna.kernels import scan_v2  # noqa: E402
from mambadna.kernels.choice import auto_version  # noqa: E402
from mambadna.kernels.gpu import selective_scan_triton  # noqa: E402
from model_layout import model_scan_views, out_grad_view  # noqa: E402

SHAPES = [(1, 512, 2**20, 16), (8, 512, 2**17, 16), (8, 1536, 4096, 16), (32, 2048, 2048, 16)]
LAYOUTS = ("bdl", "model")
RESULTS = os.path.join(os.path.dirname(__file__), "results", "bench_scan.json")
# --warm-only shortens sequences to this: the kernels compiled depend on the launch plan's flags and on which
# integers are multiples of 16, not on the length, and the plans of SHAPES keep both at this length (scan_v2.plan:
# the same chunk count from 2^14 up), while the memory of eight parallel warm-ups stays small.
WARM_MAX_L = 2**14


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
    """bf16 inputs. Layout "bdl": u, Δ, z, dy (b, d, l) and B, C (b, n, l) contiguous; "model": the strides
    MambaMixer gives them (model_layout.py: views of its linear layers' (b, l, ·) outputs)."""
    g = torch.Generator(device=device).manual_seed(seed)
    bf = torch.bfloat16

    def r(*s, scale=1.0, shift=0.0, dt=bf):
        return (torch.randn(*s, device=device, generator=g) * scale + shift).to(dt).requires_grad_()

    views = model_scan_views(b, d, l, n, bf, device) if layout == "model" else {}

    def seq(name, rows, scale=1.0, shift=0.0):
        if name in views:  # fill the model's view in place, then make it a leaf with the same strides
            x = views[name]
            x.copy_(torch.randn(x.shape, device=device, generator=g) * scale + shift)
            return x.detach().requires_grad_()
        return r(b, rows, l, scale=scale, shift=shift)

    u, delta, z = seq("u", d), seq("delta", d, scale=0.5, shift=-1.0), seq("z", d)
    A = (-torch.exp(torch.randn(d, n, device=device, generator=g) * 0.5)).requires_grad_()
    B, C = seq("B", n), seq("C", n)
    D, bias = r(d, dt=torch.float32), r(d, scale=0.3, dt=torch.float32)
    if layout == "model":
        dy = out_grad_view(b, d, l, bf, device, g)
    else:
        dy = torch.randn(b, d, l, device=device, generator=g).to(bf)
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
    if not u.is_cuda:  # --cpu-smoke: one call each in the interpreter, wall clock
        t0 = time.perf_counter()
        fwd()
        t1 = time.perf_counter()
        fwd_bwd()
        return (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3, 0.0
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


def variants(mamba, v2_configs=()):
    """(name, callable) of everything timed per shape: v1, v2 at its default plan, v2 at each of `v2_configs`
    (keywords of scan_v2.plan), mamba_ssm when given."""
    out = [("v1", lambda *a, **k: selective_scan_triton(*a, version=1, **k)),
           ("v2", lambda *a, **k: selective_scan_triton(*a, version=2, **k))]
    out += [(f"v2 {json.dumps(c)}", (lambda c: lambda *a, **k: selective_scan_triton(*a, version=2, **c, **k))(c))
            for c in v2_configs]
    if mamba is not None:
        out.append(("mamba_ssm", mamba))
    return out


def warm(shapes, v2_configs, part):
    """Run every (variant, layout) once on each shape, at most WARM_MAX_L long: fills Triton's cache for the timing
    run. `part` i/k takes every k-th (variant, layout) from the i-th, so k processes compile in parallel."""
    i, k = (int(x) for x in part.split("/"))
    groups = [(v, layout) for v in variants(None, v2_configs) for layout in LAYOUTS][i::k]
    for (name, fn), layout in groups:
        for b, d, l, n in shapes:
            xs, dy = make_inputs(b, d, min(l, WARM_MAX_L), n, "cuda", layout=layout)
            t0 = time.time()
            time_scan(fn, xs, dy, 0)
            print(f"warm {(b, d, l, n)} {layout} {name}: {time.time() - t0:.1f} s", flush=True)
            del xs, dy
            torch.cuda.empty_cache()


def measure_shape(shape, todo, rep, rounds, device):
    """{layout: {variant: {fwd_ms, fwd_bwd_ms, peak_gib[, round2_*]}}} for one shape; rounds interleave the
    variants (v1, v2, ..., v1, v2, ...) so that drift hits all alike."""
    out = {}
    for layout in LAYOUTS:
        xs, dy = make_inputs(*shape, device, layout=layout)
        res = out[layout] = {}
        for r in range(rounds):
            for name, fn in todo:
                try:
                    t_f, t_all, peak = time_scan(fn, xs, dy, rep)
                except Exception as exc:  # a launch shape that does not fit is recorded, not fatal
                    res[name] = dict(error=f"{type(exc).__name__}: {str(exc)[:200]}")
                    continue
                if r == 0:
                    res[name] = dict(fwd_ms=t_f, fwd_bwd_ms=t_all, peak_gib=peak)
                elif "error" not in res[name]:
                    res[name].update({f"round{r + 1}_fwd_ms": t_f, f"round{r + 1}_fwd_bwd_ms": t_all})
                print(shape, layout, name, f"round {r + 1}", res[name], flush=True)
                if device == "cuda":
                    torch.cuda.empty_cache()
        del xs, dy
    return out


def summary(head) -> str:
    """One line per (shape, layout): fwd+bwd ms (|the second round's) (fwd ms), peak GiB of every variant, and
    mamba_ssm's fwd+bwd time over its own."""
    lines = []
    for row in head["rows"]:
        for layout, res in row["layouts"].items():
            ref = res.get("mamba_ssm", {})
            cells = []
            for name, r in res.items():
                if "error" in r:
                    cells.append(f"{name} error")
                    continue
                x = (f" {ref['fwd_bwd_ms'] / r['fwd_bwd_ms']:.2f}x" if "fwd_bwd_ms" in ref and name != "mamba_ssm"
                     else "")
                again = f"|{r['round2_fwd_bwd_ms']:.2f}" if "round2_fwd_bwd_ms" in r else ""
                cells.append(f"{name} {r['fwd_bwd_ms']:.2f}{again} ({r['fwd_ms']:.2f}) {r['peak_gib']:.1f}G{x}")
            floor = f" floor {row['floor_ms']:.2f}" if row.get("floor_ms") else ""
            lines.append(f"{tuple(row['shape'])} {layout} auto=v{row['auto']}{floor}: " + "; ".join(cells))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=RESULTS)
    ap.add_argument("--shapes", type=int, nargs="*", help="indices into SHAPES (default all)")
    ap.add_argument("--rep", type=int, default=300, help="do_bench repetition time, ms")
    ap.add_argument("--rounds", type=int, default=1, help="time every variant this many times, interleaved")
    ap.add_argument("--v2-configs", default="[]", help="JSON list of scan_v2.plan keywords: v2 variants to time too")
    ap.add_argument("--no-mamba", action="store_true", help="leave mamba_ssm out even if it imports")
    ap.add_argument("--warm-only", action="store_true", help="run every variant once (compiles), time nothing")
    ap.add_argument("--part", default="0/1", help="i/k: with --warm-only, every k-th (variant, layout) from the i-th")
    ap.add_argument("--profile", action="store_true", help="per-kernel times of v2 in the bdl layout (torch.profiler)")
    ap.add_argument("--flash", action="store_true", help="also time FlashAttention (SDPA) at the issue's two shapes")
    ap.add_argument("--cpu-smoke", action="store_true", help="a tiny shape on the CPU (Triton's interpreter)")
    args = ap.parse_args()
    v2_configs = json.loads(args.v2_configs)
    for c in v2_configs:  # a misspelt keyword fails here, before any compilation or timing
        scan_v2.plan(1, 512, 2**12, 512, torch.device("cpu"), **c)
    shapes = [SHAPES[i] for i in args.shapes] if args.shapes else SHAPES
    if args.warm_only:
        return warm(shapes, v2_configs, args.part)
    mamba = None
    if not args.no_mamba and not args.cpu_smoke:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as mamba
        except ImportError:
            pass
    head = dict(date=str(datetime.datetime.now(datetime.timezone.utc).date()), torch=torch.__version__,
                triton=triton.__version__, python=platform.python_version(), commit=_commit(), same_run=True,
                mamba_ssm=mamba is not None, v2_configs=v2_configs, rounds=args.rounds, rep_ms=args.rep, rows=[])
    if args.cpu_smoke:  # the same path at one tiny shape, launch shapes shrunk so chunk boundaries fall inside
        device, shapes, bw, exp_rate = "cpu", [(1, 4, 40, 4)], None, None
        todo = [("v1", lambda *a, **k: selective_scan_triton(*a, version=1, chunk_size=16, **k)),
                ("v2", lambda *a, **k: selective_scan_triton(*a, version=2, tile=8, ckpt_tiles=2, chunk=16, **k))]
        head["card"] = "cpu (interpreter)"
    else:
        device, todo = "cuda", variants(mamba, v2_configs)
        bw, exp_rate = measure_rates()
        head.update(card=torch.cuda.get_device_name(), copy_tb_s=bw / 1e12, exp2_per_s=exp_rate)
    print(json.dumps({k: v for k, v in head.items() if k != "rows"}), flush=True)
    for shape in shapes:
        b, d, l, n = shape
        row = dict(shape=list(shape), auto=auto_version(b, d, l, n))
        row["layouts"] = measure_shape(shape, todo, args.rep, args.rounds, device)
        if bw:
            row["floor_ms"] = max((22 * b * d * l + 12 * b * n * l) / bw, 2 * b * d * l * n / exp_rate) * 1e3
        if args.profile:
            xs, dy = make_inputs(*shape, device)
            try:
                row["v2_kernels_ms"] = profile(todo[1][1], xs, dy)
            except Exception as exc:  # a profiler failure must not cost the timings of this shape
                row["v2_kernels_ms"] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            print(shape, "v2 kernels", row["v2_kernels_ms"], flush=True)
            del xs, dy
        head["rows"].append(row)
        _write(args.out, head)
    if args.flash:
        head["flash_attention_fwd_bwd_ms"] = {f"b{bt} l{ll} h{h} (width {h * 64})": sdpa_ms(bt, ll, h, args.rep)
                                              for bt, ll, h in ((8, 4096, 12), (32, 2048, 16))}
        _write(args.out, head)
    print(summary(head))


def _write(path, head):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(head, f, indent=1)
    os.replace(tmp, path)


def _commit() -> str | None:
    if os.environ.get("COMMIT"):  # the GPU machine gets the tree without .git: experiments/gpu_scan.sh passes it
        return os.environ["COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def profile(fn, xs, dy):
    """Device ms per kernel over one fwd+bwd (mean of 3), in launch order: a kernel launched twice in a step gets
    "#1", "#2" (v2's `_fwd_scan` runs as the chunk summary, then as the scan), so each pass shows on its own."""
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
    try:
        kernels = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                         key=lambda e: e.time_range.start)
        per_step = len(kernels) // 3
        out = {}
        for i, e in enumerate(kernels[: 3 * per_step]):
            name = e.name[:60]
            k = sum(1 for f in kernels[(i // per_step) * per_step: i] if f.name[:60] == name) + 1
            key = f"{name}#{k}"
            out[key] = out.get(key, 0.0) + e.time_range.elapsed_us() / 3 / 1e3
        return {key: round(v, 4) for key, v in out.items()}
    except (AttributeError, TypeError) as exc:  # profiler internals differ between torch versions: totals instead
        out = {"launch order unavailable": f"{type(exc).__name__}: {exc}"[:120]}
        for ev in prof.key_averages():
            if ev.device_time_total > 0:
                out[ev.key[:60]] = round(ev.device_time_total / 3 / 1e3, 4)
        return out


if __name__ == "__main__":
    main()
