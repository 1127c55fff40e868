"""Serving what we train, on one GPU: decode speed against a same-size Transformer, embedding throughput, and the
memory of million-base classifier fine-tuning.

    python experiments/bench_serving.py --out experiments/results/bench_serving           # H200, ~3 min
    python experiments/bench_serving.py --out /tmp/serving --cpu-smoke                     # tiny, CPU, seconds

1. check (GPU): the graph-captured decoder against the eager one (same greedy tokens, same step logits), the fused
   Triton step against the eager step, after a real prompt.
2. generation: greedy tokens/s of MambaLM "base" (3.5M, d 256 x 8) decoding after a context of 8k, 64k and 1M
   bases, at batch 1 and 64, eager / CUDA graph / CUDA graph + fused step kernels; against the Transformer of
   experiments/transformer_baseline.py (3.95M) with a static KV cache, eager and CUDA graph. Mamba's context is a
   real prefill at batch 1 (its state then copied to every row); the Transformer's cache is prefilled for 8k and
   64k and filled with random keys/values at 1M (its decode cost does not depend on their values; an exact 1M
   prefill is O(l^2)). Where a cache does not fit the card, the row says so with the size it would need.
3. embedding: bases/s of `embed_records` (base model, bf16 on the GPU, fp32 on the CPU) for 8 kb sequences, and
   peak GPU memory embedding one 2^20-base sequence (chunked, streamed: the pooled vector only).
4. fine-tuning memory: peak GPU memory and step time of one classifier training step (d 128 x 6 "small", batch 1,
   bf16) at windows 2^17 ... 2^20, per-block activation checkpointing against `chunk_bp` 2^16 recomputation.

Writes bench_serving.json (raw rows) and bench_serving.md (tables) to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transformer_baseline import StaticDecoder, TransformerConfig, TransformerLM  # noqa: E402

from mambadna.commands.embed import Record, embed_records  # noqa: E402
from mambadna.config import base, small, tiny  # noqa: E402
from mambadna.inference import Decoder, prefill  # noqa: E402
from mambadna.model import MambaClassifier, MambaLM  # noqa: E402
from mambadna.objective import classification_loss  # noqa: E402


def log(msg: str) -> None:
    print(msg, flush=True)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dna(b: int, l: int, device, seed: int = 0) -> torch.Tensor:
    return torch.randint(5, 9, (b, l), generator=torch.Generator().manual_seed(seed)).to(device)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def gib(nbytes: float) -> float:
    return round(nbytes / 2**30, 2)


# 1 + 2. decoding -------------------------------------------------------------------------------------------------

def mamba_context(model: MambaLM, context: int, batch: int, device, chunk: int):
    """States after a real `context`-base prompt (prefilled at batch 1 in chunks, copied to every row), and the
    first greedy token."""
    states = model.zero_states(1)
    ids = dna(1, context, device)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for lo in range(0, context, chunk):
            logits = prefill(model, ids[:, lo : lo + chunk], states)[:, -1]
    first = logits.float().argmax(-1).expand(batch).contiguous()
    wide = model.zero_states(batch)
    for w, s in zip(wide, states):
        w.conv.copy_(s.conv.expand_as(w.conv))
        w.ssm.copy_(s.ssm.expand_as(w.ssm))
    return wide, first


def time_mamba(model, states, first, n_tokens, graph, fused, device) -> float:
    model.fused_step = fused
    decoder = Decoder(model, first.shape[0], temperature=0, block=32, graph=graph)
    decoder.decode(states, first, 32)  # warm-up (captures the graph)
    sync(device)
    start = time.perf_counter()
    decoder.decode(states, first, n_tokens)
    sync(device)
    return first.shape[0] * n_tokens / (time.perf_counter() - start)


def check_decoders(model: MambaLM, device) -> dict:
    """Graph-captured vs eager decoding and fused vs eager steps, from one real prompt's state."""
    states, first = mamba_context(model, 4096, 2, device, 4096)
    out = {}
    tokens = {}
    for name, graph, fused in (("eager", False, False), ("graph", True, False), ("graph_fused", True, True)):
        model.fused_step = fused
        tokens[name] = Decoder(model, 2, temperature=0, block=16, graph=graph).decode(states, first, 64)
    out["graph_tokens_equal_eager"] = bool(torch.equal(tokens["graph"], tokens["eager"]))
    out["graph_fused_tokens_equal_eager"] = bool(torch.equal(tokens["graph_fused"], tokens["eager"]))
    a = [type(s)(s.conv.clone(), s.ssm.clone()) for s in states]
    b = [type(s)(s.conv.clone(), s.ssm.clone()) for s in states]
    model.fused_step = False
    eager = model.step(first, a)
    model.fused_step = True
    fused = model.step(first, b)
    out["fused_step_max_rel_err"] = float((fused - eager).abs().max() / eager.abs().max())
    out["fused_state_max_rel_err"] = max(float((x.ssm - y.ssm).abs().max() / y.ssm.abs().max()) for x, y in zip(b, a))
    model.fused_step = None
    return out


def transformer_rate(model: TransformerLM, context: int, batch: int, n_tokens: int, graph: bool, device) -> float:
    cache_len = context + n_tokens + 64
    cache = model.allocate_cache(batch, cache_len, device=device,
                                 dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    if context <= 65536:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model.prefill(dna(1, context, device), [(k[:1], v[:1]) for k, v in cache])
        for k, v in cache:
            k[1:, :, :context].copy_(k[:1, :, :context].expand(batch - 1, -1, -1, -1))
            v[1:, :, :context].copy_(v[:1, :, :context].expand(batch - 1, -1, -1, -1))
        first = logits.float().argmax(-1).expand(batch).contiguous()
    else:
        for k, v in cache:
            k.normal_()
            v.normal_()
        first = torch.full((batch,), 5, dtype=torch.long, device=device)
    decoder = StaticDecoder(model, cache, block=32, graph=graph)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        decoder.decode(first, context, 1)  # warm-up (captures the graph)
        sync(device)
        start = time.perf_counter()
        decoder.decode(first, context, n_tokens // 32)
        sync(device)
    return batch * n_tokens / (time.perf_counter() - start)


def generation(s) -> list[dict]:
    mamba = MambaLM(s.mamba).to(s.device).eval()
    transformer = TransformerLM(s.transformer).to(s.device).eval()
    rows = []
    for context in s.contexts:
        prompt_states = {}
        for batch in s.batches:
            row = {"context_bp": context, "batch": batch}
            try:
                states, first = mamba_context(mamba, context, batch, s.device, s.prefill_chunk)
                for name, graph, fused in s.mamba_modes:
                    row[f"mamba_{name}_tok_s"] = round(time_mamba(mamba, states, first, s.new_tokens, graph, fused,
                                                                  s.device), 1)
                prompt_states[batch] = True
            except Exception as exc:  # noqa: BLE001 - recorded, the benchmark goes on
                row["mamba_error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
            need = 2 * s.transformer.n_layer * batch * (context + s.new_tokens + 64) * s.transformer.d_model * 2
            row["transformer_cache_gib"] = gib(need)
            if s.device.type == "cuda" and need > 0.85 * torch.cuda.get_device_properties(s.device).total_memory:
                row["transformer"] = f"KV cache does not fit: needs {gib(need)} GiB"
            else:
                for name, graph in s.transformer_modes:
                    try:
                        row[f"transformer_{name}_tok_s"] = round(transformer_rate(
                            transformer, context, batch, s.new_tokens, graph, s.device), 1)
                    except Exception as exc:  # noqa: BLE001
                        if not is_oom(exc):
                            raise
                        row[f"transformer_{name}_tok_s"] = "OOM"
                    torch.cuda.empty_cache() if s.device.type == "cuda" else None
            rates = {k: v for k, v in row.items() if k.endswith("_tok_s") and isinstance(v, float)}
            best_t = max((v for k, v in rates.items() if k.startswith("transformer_")), default=None)
            best_m = max((v for k, v in rates.items() if k.startswith("mamba_")), default=None)
            if best_t and best_m:
                row["mamba_vs_transformer_best"] = round(best_m / best_t, 2)
            log(f"  generation {row}")
            rows.append(row)
    return rows


# 3. embedding ------------------------------------------------------------------------------------------------------

def embedding(s) -> list[dict]:
    rows = []
    model = MambaLM(s.mamba)
    rng = np.random.default_rng(0)

    def random_dna(n: int) -> bytes:
        return np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, n)].tobytes()

    for device, count in s.embed_devices:
        records = [Record(f"s{i}", random_dna(s.embed_bp)) for i in range(count)]
        embed_records(model, records[:2], device=device, batch_size=s.embed_batch)  # warm-up
        sync(device)
        start = time.perf_counter()
        embed_records(model, records, device=device, batch_size=s.embed_batch)
        sync(device)
        seconds = time.perf_counter() - start
        rows.append({"what": "bases/s", "device": str(device), "sequences": count, "length_bp": s.embed_bp,
                     "bases_per_s": round(count * s.embed_bp / seconds, 1), "seconds": round(seconds, 3)})
        log(f"  embedding {rows[-1]}")
    if s.device.type == "cuda":
        long_record = [Record("long", random_dna(s.long_bp))]
        torch.cuda.reset_peak_memory_stats(s.device)
        start = time.perf_counter()
        embed_records(model, long_record, device=s.device, chunk_bp=1 << 16)
        sync(s.device)
        rows.append({"what": "one long sequence", "device": str(s.device), "length_bp": s.long_bp,
                     "peak_gib": gib(torch.cuda.max_memory_allocated(s.device)),
                     "seconds": round(time.perf_counter() - start, 3)})
        log(f"  embedding {rows[-1]}")
    return rows


# 4. fine-tuning memory ------------------------------------------------------------------------------------------------

def finetune_memory(s) -> list[dict]:
    rows = []
    for window in s.windows:
        for mode in ("per_block_checkpointing", "chunk_bp"):
            model = MambaClassifier(s.classifier, 4, "last").to(s.device)
            model.backbone.activation_checkpointing = mode == "per_block_checkpointing"
            chunk = s.chunk_bp if mode == "chunk_bp" else None
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            ids, labels = dna(1, window, s.device), torch.tensor([1], device=s.device)
            row = {"window_bp": window, "mode": mode, "chunk_bp": chunk}
            try:
                for step in range(2):  # the second step is timed, after allocator and autotune warm-up
                    if s.device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(s.device)
                    sync(s.device)
                    start = time.perf_counter()
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=s.device.type == "cuda"):
                        loss, _ = classification_loss(model, ids, None, labels, chunk)
                    loss.backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    sync(s.device)
                row["step_s"] = round(time.perf_counter() - start, 3)
                if s.device.type == "cuda":
                    row["peak_gib"] = gib(torch.cuda.max_memory_allocated(s.device))
            except Exception as exc:  # noqa: BLE001
                if not is_oom(exc):
                    raise
                row["peak_gib"] = "OOM"
            del model, opt
            if s.device.type == "cuda":
                torch.cuda.empty_cache()
            log(f"  finetune {row}")
            rows.append(row)
    return rows


class Settings:
    def __init__(self, cpu_smoke: bool):
        self.device = torch.device("cpu" if cpu_smoke else "cuda")
        cuda = not cpu_smoke
        self.mamba = base() if cuda else tiny(d_model=32, d_state=8)
        self.transformer = TransformerConfig() if cuda else TransformerConfig(d_model=32, n_layer=2, n_head=2)
        self.classifier = small() if cuda else tiny(d_model=16, d_state=4)
        self.contexts = [8192, 65536, 1 << 20] if cuda else [64]
        self.batches = [1, 64] if cuda else [1, 3]
        self.new_tokens = 256 if cuda else 32
        self.prefill_chunk = 1 << 18 if cuda else 128
        self.mamba_modes = ([("eager", False, False), ("graph", True, False), ("graph_fused", True, True)] if cuda
                            else [("eager", False, False)])
        self.transformer_modes = [("eager", False), ("graph", True)] if cuda else [("eager", False)]
        self.embed_bp = 8192 if cuda else 200
        self.embed_batch = 64 if cuda else 4
        self.embed_devices = [(self.device, 256), (torch.device("cpu"), 16)] if cuda else [(self.device, 4)]
        self.long_bp = 1 << 20
        self.windows = [1 << 17, 1 << 18, 1 << 19, 1 << 20] if cuda else [256]
        self.chunk_bp = 1 << 16 if cuda else 128


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for bench_serving.json / .md")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU, seconds")
    parser.add_argument("--sections", default="check,generation,embedding,finetune")
    args = parser.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --cpu-smoke for the tiny CPU run")
    s = Settings(args.cpu_smoke)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"device": torch.cuda.get_device_name(0) if s.device.type == "cuda" else "cpu",
              "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
    try:
        import triton

        result["triton"] = triton.__version__
    except ImportError:
        result["triton"] = None
    sections = args.sections.split(",")
    if "check" in sections and s.device.type == "cuda":
        log("check: graph and fused decoding against eager")
        result["check"] = check_decoders(MambaLM(s.mamba).to(s.device).eval(), s.device)
        log(f"  {result['check']}")
    for name, fn in (("generation", generation), ("embedding", embedding), ("finetune", finetune_memory)):
        if name in sections:
            log(name)
            result[name] = fn(s)
            (out / "bench_serving.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "bench_serving.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "bench_serving.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    lines = [f"# bench_serving ({r['device']}, {r['date']}, torch {r['torch']}, triton {r['triton']})", ""]
    if "check" in r:
        lines += ["check: " + ", ".join(f"{k} = {v}" for k, v in r["check"].items()), ""]
    for section in ("generation", "embedding", "finetune"):
        rows = r.get(section) or []
        if not rows:
            continue
        keys = list(dict.fromkeys(k for row in rows for k in row))
        lines += [f"## {section}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(str(row.get(k, "")) for k in keys) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
