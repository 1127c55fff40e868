"""Million-base contexts on one GPU: MambaLM training against a same-size Transformer.

    python experiments/bench_model.py --out experiments/results/bench_model          # full run, ~6 min on an H100
    python experiments/bench_model.py --out /tmp/bench --quick                         # ~1 min
    python experiments/bench_model.py --out /tmp/bench --cpu-smoke                     # tiny sizes on the CPU

Sections, in this order (training series in the order of --models, by default base, transformer, small, so a
budget cut trims the least needed):
1. exactness: loss and gradients of the chunked loss (`objective.lm_loss` with chunk_bp 2^16) against the unchunked
   model at l = 2^18, in fp32 and under bf16 autocast; the unchunked bf16-vs-fp32 difference is the rounding floor
   bf16 is judged against.
2. training: tokens/s, step time and peak memory of one AdamW step (batch 1, bf16 autocast, fp32 weights) at
   l = 2^14 ... 2^23, for MambaLM "base" (d 256 x 8, 3.5M parameters) and "small" (d 128 x 6) in three modes:
   plain, per-block activation checkpointing (`MambaLM.activation_checkpointing`) and sequence chunking
   (`objective.lm_loss` with --chunk-bp); and the Transformer (experiments/transformer_baseline.py)
   plain, switching to per-block checkpointing from the first length where plain runs out of memory, up to 2^20.
   Each configuration: one warm-up step, then 2 timed steps (1 when the warm-up took over 3 s). A CUDA OOM is
   recorded as "OOM" and ends that series; so does a step over --step-limit-s, or the --budget-s being spent.
   --modes picks the Mamba modes and --scan-kernels runs each Mamba series once per value of the model's
   `scan_kernel` setting (auto, v1, v2), named e.g. mamba-base[v2] (experiments/gpu_scan.sh uses both), and
   --conv-backends once per value of `conv_backend` (torch, triton, auto), named e.g. mamba-base[conv=triton] or
   mamba-base[v2,conv=triton] (torch rows keep the plain names).
   --norm-backends likewise per value of `norm_backend` (torch, triton, auto), named e.g. mamba-base[norm=triton].

Writes bench_model.md (tables), bench_model.json (raw rows) and bench_model.png (time per token vs context,
log-log) to --out, and prints the tables. Decoding speed is measured by experiments/bench_serving.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transformer_baseline import TransformerConfig, TransformerLM  # noqa: E402

from mambadna.config import MambaConfig  # noqa: E402
from mambadna.kernels.choice import CONV_BACKENDS, NORM_BACKENDS, SCAN_KERNELS  # noqa: E402
from mambadna.model import MambaLM  # noqa: E402
from mambadna.objective import lm_loss_mean, next_token_targets  # noqa: E402

# mamba_ssm's CUDA scan on an H100 80GB, same 3.5M model, batch 1, bf16 (from the issue): l -> (M tok/s, GB)
ANCHOR_MAMBA = {2**14: "0.60 M/s 1.4 GB", 2**16: "0.96 M/s 5.2 GB", 2**18: "0.95 M/s 20.5 GB",
                2**20: "OOM; ckpt 0.50 M/s 21.0 GB", 2**21: "ckpt 0.50 M/s 41.9 GB", 2**22: "OOM"}
ANCHOR_TRANSFORMER = {2**14: "1.53 M/s", 2**16: "0.66 M/s", 2**18: "0.17 M/s", 2**20: "0.043 M/s 48.8 GB"}


@dataclass
class Settings:
    device: torch.device
    amp: torch.dtype | None  # autocast dtype, None for full fp32
    lengths: list[int]
    transformer_max_l: int
    chunk_bp: int
    exact_l: int
    step_limit_s: float
    budget_s: float
    models: dict[str, MambaConfig]
    transformer: TransformerConfig
    simulate_oom_above: int | None


def settings_from_args(args) -> Settings:
    cuda = not args.cpu_smoke
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --cpu-smoke for the tiny CPU run")
    if args.cpu_smoke:
        return Settings(torch.device("cpu"), None, [2**8, 2**9, 2**10], 2**10, 2**7, 2**10,
                        args.step_limit_s, args.budget_s,
                        {"base": MambaConfig(d_model=32, n_layer=2), "small": MambaConfig(d_model=16, n_layer=2)},
                        TransformerConfig(d_model=32, n_layer=2, n_head=2), simulate_oom_above=2**9)
    models = {"base": MambaConfig(d_model=256, n_layer=8), "small": MambaConfig(d_model=128, n_layer=6)}
    if args.quick:
        return Settings(torch.device("cuda"), torch.bfloat16, [2**14, 2**16, 2**18], 2**16, args.chunk_bp, 2**18,
                        args.step_limit_s, args.budget_s, {"base": models["base"]},
                        TransformerConfig(), None)
    return Settings(torch.device("cuda"), torch.bfloat16, [2**k for k in range(14, 24)], 2**20, args.chunk_bp,
                    2**18, args.step_limit_s, args.budget_s, models,
                    TransformerConfig(), None)


class Clock:
    def __init__(self, s: Settings):
        self.s, self.start = s, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def sync(self) -> None:
        if self.s.device.type == "cuda":
            torch.cuda.synchronize()

    def autocast(self):
        return torch.autocast("cuda", dtype=self.s.amp) if self.s.amp is not None else nullcontext()


def log(msg: str) -> None:
    print(msg, flush=True)


def dna(b: int, l: int, device, seed: int = 0) -> torch.Tensor:
    """Random bases (ids 5..8, A C G T): the cost of a step does not depend on the content."""
    return torch.randint(5, 9, (b, l), generator=torch.Generator().manual_seed(seed)).to(device)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


# 1. exactness ------------------------------------------------------------------------------------------------

GRAD_NAMES = ("embedding.weight", "layers.0.mixer.in_proj.weight", "layers.3.mixer.dt_proj.bias",
              "layers.7.mixer.A_log", "layers.7.mixer.out_proj.weight", "norm_f.weight")


def exactness(clock: Clock, conv_backends=("torch",), norm_backends=("torch",)) -> list[dict]:
    """The comparisons once per (conv, norm) backend pair (rows name the non-torch ones); a pair with a non-torch
    backend is also compared with torch/torch, unchunked in fp32, when that pair is asked for too."""
    rows, fp32 = [], {}
    for pair in ((c, n) for c in conv_backends for n in norm_backends):
        tag = ",".join(backend_tags(*pair))
        got, fp32[pair] = _exactness_rows(clock, *pair, f" [{tag}]" if tag else "")
        free_memory()
        rows += got
    base = ("torch", "torch")
    for pair in [p for p in fp32 if p != base and base in fp32]:
        (loss_a, grads_a), (loss_b, grads_b) = fp32[pair], fp32[base]
        rows.append(dict(comparison=f"conv={pair[0]},norm={pair[1]} vs torch, unchunked fp32", loss_a=loss_a,
                         loss_b=loss_b, loss_rel=abs(loss_a - loss_b) / abs(loss_b),
                         grad_rel=_grad_rel(grads_a, grads_b), grads=len(grads_a)))
        rows[-1]["ok"] = rows[-1]["loss_rel"] < 1e-5 and rows[-1]["grad_rel"] < 1e-3
    s = clock.s
    for r in rows:
        log(f"exactness l={s.exact_l} chunk={s.chunk_bp}: {r['comparison']}: loss rel {r['loss_rel']:.2e}, "
            f"max grad rel {r['grad_rel']:.2e} over {r['grads']} tensors -> {'PASS' if r['ok'] else 'FAIL'}")
    return rows


def backend_tags(conv: str, norm: str) -> list[str]:
    """The non-torch conv and norm backends of a series, for its name: e.g. ["conv=triton"]."""
    return [f"{what}={value}" for what, value in (("conv", conv), ("norm", norm)) if value != "torch"]


def _grad_rel(a: dict, b: dict) -> float:
    return max(float((a[n] - b[n]).norm() / b[n].norm().clamp_min(1e-30)) for n in a)


def _exactness_rows(clock: Clock, conv: str, norm: str, tag: str):
    """-> (the rows of one conv and norm backend, its unchunked fp32 (loss, grads))."""
    s = clock.s
    torch.manual_seed(0)
    model = MambaLM(dataclasses.replace(s.models["base"], conv_backend=conv, norm_backend=norm)).to(s.device)
    names = [n for n in GRAD_NAMES if n in dict(model.named_parameters())]
    params = dict(model.named_parameters())
    ids = dna(1, s.exact_l, s.device, seed=1)

    def run(chunked: bool, amp: bool):
        model.zero_grad(set_to_none=True)
        with clock.autocast() if amp else nullcontext():
            if chunked:
                loss = lm_loss_mean(model, *next_token_targets(ids), s.chunk_bp)
            else:
                loss = F.cross_entropy(model(ids)[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
        loss.backward()
        return float(loss), {n: params[n].grad.float().clone() for n in names}

    ref32, chk32 = run(False, False), run(True, False)
    rows = [dict(comparison="chunked vs unchunked, fp32" + tag, loss_a=chk32[0], loss_b=ref32[0],
                 loss_rel=abs(chk32[0] - ref32[0]) / abs(ref32[0]), grad_rel=_grad_rel(chk32[1], ref32[1]))]
    rows[-1]["ok"] = rows[-1]["loss_rel"] < 1e-5 and rows[-1]["grad_rel"] < 1e-3
    if s.amp is not None:
        ref16, chk16 = run(False, True), run(True, True)
        floor = _grad_rel(ref16[1], ref32[1])
        rows.append(dict(comparison="unchunked bf16 vs fp32 (rounding floor)" + tag, loss_a=ref16[0],
                         loss_b=ref32[0], loss_rel=abs(ref16[0] - ref32[0]) / abs(ref32[0]), grad_rel=floor, ok=True))
        rows.append(dict(comparison="chunked vs unchunked, bf16" + tag, loss_a=chk16[0], loss_b=ref16[0],
                         loss_rel=abs(chk16[0] - ref16[0]) / abs(ref16[0]), grad_rel=_grad_rel(chk16[1], ref16[1])))
        rows[-1]["ok"] = rows[-1]["loss_rel"] < 1e-3 and rows[-1]["grad_rel"] <= max(2 * floor, 1e-2)
    rows = [dict(r, grads=len(names)) for r in rows]
    return rows, ref32  # the model goes with this frame: the caller frees the memory


# 2. training -------------------------------------------------------------------------------------------------

def mamba_for_mode(config: MambaConfig, mode: str) -> MambaLM:
    """A fresh MambaLM; for "block-ckpt" with the training tasks' per-block activation checkpointing switched on."""
    model = MambaLM(config)
    model.activation_checkpointing = mode == "block-ckpt"
    return model


def train_step(model, opt, ids, mode: str, clock: Clock, simulate_oom: bool) -> None:
    if simulate_oom:
        raise torch.cuda.OutOfMemoryError("simulated out of memory (--cpu-smoke exercises the OOM path)")
    with clock.autocast():
        if mode == "chunked":
            loss = lm_loss_mean(model, *next_token_targets(ids), clock.s.chunk_bp)
        else:
            if isinstance(model, TransformerLM):
                logits = model(ids, checkpoint_blocks=mode == "block-ckpt")
            else:
                logits = model(ids)  # (1, l, V); a "block-ckpt" MambaLM was built checkpointed (mamba_for_mode)
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
            del logits
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def measure(model, opt, l: int, mode: str, clock: Clock) -> dict:
    s = clock.s
    row = dict(l=l, mode=mode)
    simulate = s.simulate_oom_above is not None and mode == "plain" and l > s.simulate_oom_above
    if s.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        ids = dna(1, l, s.device, seed=l)
        times = []
        while len(times) < (2 if not times or times[0] < 3.0 else 1) + 1:
            clock.sync()
            t0 = time.perf_counter()
            train_step(model, opt, ids, mode, clock, simulate)
            clock.sync()
            times.append(time.perf_counter() - t0)
        step_s = min(times[1:])
        row.update(status="ok", step_s=step_s, tok_s=l / step_s, timed_steps=len(times) - 1)
        if s.device.type == "cuda":
            row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    except RuntimeError as exc:
        if not is_oom(exc):
            raise
        row["status"] = "OOM"
    opt.zero_grad(set_to_none=True)
    ids = None
    free_memory()
    return row


def series(label: str, make_model, modes: list[str], lengths: list[int], clock: Clock, fallback: bool) -> list[dict]:
    """One configuration over growing l. With `fallback`, modes[0] is used until it runs out of memory and
    modes[1] from then on (the Transformer); otherwise the series is one mode."""
    s = clock.s
    rows, mode = [], modes[0]
    torch.manual_seed(0)
    model = make_model().to(s.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for l in lengths:
        if clock.elapsed() > s.budget_s:
            rows.append(dict(model=label, l=l, mode=mode, status="skipped (budget)"))
            log(f"train {label} {mode} l=2^{int(math.log2(l))}: skipped, --budget-s {s.budget_s:.0f} spent")
            continue
        row = measure(model, opt, l, mode, clock)
        if row["status"] == "OOM" and fallback and mode == modes[0]:
            rows.append(dict(model=label, **row))
            log(f"train {label} {mode} l=2^{int(math.log2(l))}: OOM, retrying with {modes[1]}")
            mode = modes[1]
            row = measure(model, opt, l, mode, clock)
        rows.append(dict(model=label, **row))
        if row["status"] == "ok":
            log(f"train {label} {mode} l=2^{int(math.log2(l))}: {row['tok_s'] / 1e6:.3f} M tok/s, "
                f"{row['step_s']:.3f} s/step" + (f", peak {row['peak_gib']:.1f} GiB" if "peak_gib" in row else ""))
        else:
            log(f"train {label} {mode} l=2^{int(math.log2(l))}: {row['status']}")
        if row["status"] != "ok" or row["step_s"] > s.step_limit_s:
            break
    del model, opt
    free_memory()
    return rows


MODES = ("plain", "block-ckpt", "chunked")


def training(clock: Clock, which: list[str], modes=MODES, kernels=("auto",), progress=None,
             conv_backends=("torch",), norm_backends=("torch",)) -> list[dict]:
    """Series in the order of `which` (base, transformer, small by default: a budget cut trims the least needed);
    each Mamba model in every mode of `modes`, once per scan kernel of `kernels` (the `scan_kernel` setting), conv
    kernel of `conv_backends` (`conv_backend`) and norm kernel of `norm_backends` (`norm_backend`). Rows say which; the
    model name carries the scan kernel when more than one is asked for and the conv and norm kernels when they are
    not torch, e.g. mamba-base[v2,conv=triton,norm=triton]. `progress(rows)` is called after every series, so a run
    cut short keeps what it measured."""
    s = clock.s
    rows = []
    for name in which:
        if name == "transformer":
            tf_lengths = [l for l in s.lengths if l <= s.transformer_max_l]
            rows += series("transformer", lambda: TransformerLM(s.transformer), ["plain", "block-ckpt"], tf_lengths,
                           clock, fallback=True)
            if progress:
                progress(rows)
        elif name in s.models:
            for mode in modes:
                for kernel, conv, norm in ((k, c, n) for k in kernels for c in conv_backends for n in norm_backends):
                    cfg = dataclasses.replace(s.models[name], scan_kernel=kernel, conv_backend=conv, norm_backend=norm)
                    tags = ([kernel] if len(kernels) > 1 else []) + backend_tags(conv, norm)
                    label = f"mamba-{name}" + (f"[{','.join(tags)}]" if tags else "")
                    rows += [dict(r, scan_kernel=kernel, conv_backend=conv, norm_backend=norm) for r in
                             series(label, lambda cfg=cfg, m=mode: mamba_for_mode(cfg, m), [mode], s.lengths, clock,
                                    fallback=False)]
                    if progress:
                        progress(rows)
    return rows


# report ------------------------------------------------------------------------------------------------------

def fmt_l(l: int) -> str:
    return f"2^{int(math.log2(l))}"


def report(s: Settings, exact: list[dict], train: list[dict], env: str) -> str:
    out = [f"# bench_model\n\n{env}\n", "## Exactness (chunked_lm_loss vs unchunked)\n",
           "| comparison | loss A | loss B | loss rel | max grad rel | verdict |", "|---|---|---|---|---|---|"]
    out += [f"| {r['comparison']} | {r['loss_a']:.6f} | {r['loss_b']:.6f} | {r['loss_rel']:.2e} | "
            f"{r['grad_rel']:.2e} | {'PASS' if r['ok'] else 'FAIL'} |" for r in exact]
    out += ["\n## Training (batch 1, one AdamW step)\n",
            "| model | mode | l | M tok/s | s/step | peak GiB | status | anchor (mamba_ssm, H100) |",
            "|---|---|---|---|---|---|---|---|"]
    for r in train:
        anchor = (ANCHOR_MAMBA if r["model"].startswith("mamba-base") else
                  ANCHOR_TRANSFORMER if r["model"] == "transformer" else {}).get(r["l"], "")
        if r["status"] == "ok":
            peak = f"{r['peak_gib']:.1f}" if "peak_gib" in r else "n/a"
            out.append(f"| {r['model']} | {r['mode']} | {fmt_l(r['l'])} | {r['tok_s'] / 1e6:.3f} | "
                       f"{r['step_s']:.3f} | {peak} | ok | {anchor} |")
        else:
            out.append(f"| {r['model']} | {r['mode']} | {fmt_l(r['l'])} | | | | {r['status']} | {anchor} |")
    out += ["\n## Longest context that trained\n", "| model | mode | longest l | M tok/s there |", "|---|---|---|---|"]
    seen = {}
    for r in train:
        if r["status"] == "ok":
            seen[(r["model"], r["mode"])] = r
        else:
            seen.setdefault((r["model"], r["mode"]), None)
    for (model, mode), r in seen.items():
        out.append(f"| {model} | {mode} | " + (f"{fmt_l(r['l'])} | {r['tok_s'] / 1e6:.3f} |" if r else "none | |"))
    return "\n".join(out) + "\n"


def plot(train: list[dict], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:  # the tables and JSON are the results; the figure is a convenience
        log(f"matplotlib is not installed: no {path.name}")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    keys = list(dict.fromkeys((r["model"], r["mode"]) for r in train))
    for model, mode in keys:
        pts = [(r["l"], 1e6 * r["step_s"] / r["l"]) for r in train
               if (r["model"], r["mode"]) == (model, mode) and r["status"] == "ok"]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=f"{model} {mode}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length l (tokens)")
    ax.set_ylabel("training step time per token (µs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except ImportError:
        return "absent"


def _commit() -> str:
    if os.environ.get("COMMIT"):  # the GPU machine gets the tree without .git: experiments/gpu_scan.sh passes it
        return os.environ["COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for bench_model.{md,json,png}")
    parser.add_argument("--quick", action="store_true", help="base model, l up to 2^18")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny models and lengths on the CPU")
    parser.add_argument("--chunk-bp", type=int, default=2**16, help="sequence chunk of the chunked mode")
    parser.add_argument("--step-limit-s", type=float, default=60.0, help="end a series after a slower step")
    parser.add_argument("--budget-s", type=float, default=330.0, help="skip training configurations after this")
    parser.add_argument("--sections", default="exact,train", help="comma-separated subset of exact,train")
    parser.add_argument("--log2-lengths", help="training lengths as log2, e.g. 14,16,18,20 (default: the mode's)")
    parser.add_argument("--models", default="base,transformer,small",
                        help="training series to run, in this order: subset of base,transformer,small")
    parser.add_argument("--modes", default=",".join(MODES), help="Mamba training modes: subset of " + ",".join(MODES))
    parser.add_argument("--scan-kernels", default="auto",
                        help="the model's scan_kernel setting, one series per value: subset of auto,v1,v2")
    parser.add_argument("--conv-backends", default="torch",
                        help="the model's conv_backend setting, one series per value (inside each scan kernel's): "
                             "subset of torch,triton,auto; the exactness section runs once per value too")
    parser.add_argument("--norm-backends", default="torch",
                        help="the model's norm_backend setting, one series per value (inside each conv kernel's): "
                             "subset of torch,triton,auto")
    parser.add_argument("--json-name", default="bench_model",
                        help="stem of the files written to --out (several runs can share a folder)")
    args = parser.parse_args()
    sections, which = set(args.sections.split(",")), args.models.split(",")
    modes = args.modes.split(",")
    if not set(modes) <= set(MODES):
        raise SystemExit(f"--modes takes {','.join(MODES)}; got {args.modes}")
    kernels, convs, norms = (args.scan_kernels.split(","), args.conv_backends.split(","),
                             args.norm_backends.split(","))
    for flag, given, choices in (("scan-kernels", kernels, SCAN_KERNELS), ("conv-backends", convs, CONV_BACKENDS),
                                 ("norm-backends", norms, NORM_BACKENDS)):
        if not set(given) <= set(choices):
            raise SystemExit(f"--{flag} takes {', '.join(choices)}; got {','.join(given)}")
    if not sections <= {"exact", "train"}:
        raise SystemExit(f"--sections takes exact, train; got {args.sections}")
    if not set(which) <= {"base", "transformer", "small"}:
        raise SystemExit(f"--models takes base, transformer, small; got {args.models}")
    s = settings_from_args(args)
    if args.log2_lengths:
        s.lengths = [2 ** int(k) for k in args.log2_lengths.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    clock = Clock(s)
    device_name = torch.cuda.get_device_name() if s.device.type == "cuda" else "CPU"
    env = (f"device {device_name}, torch {torch.__version__}, triton {_version('triton')}, autocast {s.amp}, "
           f"chunk_bp {s.chunk_bp}, {'cpu-smoke' if args.cpu_smoke else 'quick' if args.quick else 'full'} run, "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {_commit()}")
    log(env)
    exact = exactness(clock, convs, norms) if "exact" in sections else []
    stem = args.out / args.json_name

    def save(train_rows):
        stem.with_suffix(".json").write_text(json.dumps(dict(env=env, exactness=exact, training=train_rows),
                                                        indent=1))

    train = (training(clock, which, modes, kernels, progress=save, conv_backends=convs, norm_backends=norms)
             if "train" in sections else [])
    text = report(s, exact, train, env + f", wall {clock.elapsed():.0f} s")
    stem.with_suffix(".md").write_text(text)
    save(train)
    if train:
        plot(train, stem.with_suffix(".png"))
    log("\n" + text)
    if any(not r["ok"] for r in exact):
        raise SystemExit("exactness check FAILED")


if __name__ == "__main__":
    main()
