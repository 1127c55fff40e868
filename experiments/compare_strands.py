"""Causal vs bidirectional vs RC-equivariant Mamba (issue 15): same shape, same steps, two classification tasks.

For every task and model variant: pretrain on the task's training blocks (the causal model by next-base
prediction, the bidirectional and RC-equivariant ones as masked LMs, Caduceus's objective), fine-tune a
classifier from it, and test it on held-out blocks; all through `mambadna.commands.train` (what `mambadna
pretrain` / `finetune` run) with the recipes in experiments/recipes/strands_*.toml. Each task also gets a k-mer
(k = 4..6) logistic-regression baseline on the same test windows, and each variant its training throughput:
optimizer steps per second at the pretraining and fine-tuning batch shapes (forward, backward and AdamW on one
random batch, timed after warm-up, separately from the runs).

Tasks:
  bundled     which of the four bundled genomes a window comes from (human chr17 piece, human mtDNA, orangutan
              mtDNA, phage lambda): the demo's task; pretraining on the same four genomes' training blocks
  great_apes  which great ape (human, chimpanzee, gorilla, orangutan) a chr22 window comes from: the bundled
              subset of data/prepare_great_apes.py (--every 72, ~293 kb a species, ~99% identical sequence);
              pretraining on the four species' training blocks

Variants (model options on the same blocks; mambadna.config.MambaConfig): causal; bidirectional (BiMamba,
projections tied); caduceus (bidirectional + rc_equivariant, Caduceus-PS); rc (rc_equivariant alone, not in the
default set).

    python experiments/compare_strands.py --cpu-smoke --out /tmp/strands     # seconds: the CI check of the script
    python experiments/compare_strands.py --out experiments/results/strands_cpu  # the committed CPU table
    python experiments/compare_strands.py --gpu --out runs/strands_gpu       # GPU recipes (one GPU)

Writes OUT/results.json and OUT/table.md (and the runs themselves under OUT/runs, or --work).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mambadna import run_config as rc  # noqa: E402
from mambadna.data.bundled import default_pretrain_genome, default_species_manifest  # noqa: E402
from mambadna.data import SpeciesWindowDataset, bundled_path  # noqa: E402
from mambadna.model import MambaClassifier, MambaLM  # noqa: E402
from mambadna.objective import classification_loss, lm_loss  # noqa: E402
from mambadna.tokenizer import IGNORE_INDEX, MASK_ID  # noqa: E402

RECIPES = ROOT / "experiments" / "recipes"
VARIANTS = {
    "causal": dict(sets=[], objective="clm", label="causal (next-base LM)"),
    "bidirectional": dict(sets=["model.bidirectional=true"], objective="mlm", label="bidirectional (BiMamba, MLM)"),
    "caduceus": dict(sets=["model.bidirectional=true", "model.rc_equivariant=true"], objective="mlm",
                     label="RC-equivariant (BiMamba + RCPS, MLM)"),
    "rc": dict(sets=["model.rc_equivariant=true"], objective="mlm", label="RC-equivariant (RCPS only, MLM)"),
}
DEFAULT_VARIANTS = ("causal", "bidirectional", "caduceus")
TASKS = ("bundled", "great_apes")
APES = ("human", "chimpanzee", "gorilla", "orangutan")
# --cpu-smoke: the same pipeline at a size that runs in seconds (it checks the script, not the models)
SMOKE_PRETRAIN = ["model.d_model=8", "model.d_state=4", "data.window_bp=32", "data.batch_size=4",
                  "data.val_windows=4", "train.max_steps=2", "train.val_every_n_steps=2", "train.log_every_n_steps=1"]
SMOKE_FINETUNE = ["data.window_bp=32", "data.batch_size=4", "data.val_windows=4", "data.test_windows=16",
                  "train.max_steps=2", "train.val_every_n_steps=2", "train.log_every_n_steps=1"]
KMER_TRAIN_WINDOWS = 1024


def task_data(task: str, folder: Path) -> tuple[Path, Path]:
    """(pretraining FASTA, species manifest) of a task, written under `folder`."""
    if task == "bundled":
        return default_pretrain_genome(folder), default_species_manifest(folder)
    folder.mkdir(parents=True, exist_ok=True)
    genome, parts = folder / "great_apes_pretrain.fa", []
    for ape in APES:  # the four files share the contig name chr22_epo: one contig per species, renamed
        text = bundled_path(f"great_apes_{ape}").read_text()
        parts.append(text.replace(">chr22_epo", f">{ape}_chr22_epo", 1))
    if not genome.is_file() or genome.read_text() != "".join(parts):
        genome.write_text("".join(parts))
    return genome, bundled_path("great_apes")


def species_windows(manifest: Path, window_bp: int, split: str, count: int, seed: int):
    """(raw sequences, labels) of the windows a SpeciesDataModule gives for `split` with this seed."""
    return SpeciesWindowDataset(manifest, window_bp, split=split, num_windows=count, seed=seed).raw_windows()


def steps_per_second(model_config, objective: str, batch_size: int, window_bp: int, num_classes: int | None,
                     precision: str, device: str, steps: int) -> float:
    """Optimizer steps per second (forward, loss, backward, AdamW) on one random batch of this shape."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 9, (batch_size, window_bp), generator=g).to(device)
    if num_classes is None:
        model = MambaLM(model_config).to(device)
        if objective == "mlm":
            chosen = (torch.rand(ids.shape, generator=g) < 0.15).to(device)
            inputs, targets = torch.where(chosen, MASK_ID, ids), torch.where(chosen, ids, IGNORE_INDEX)
        else:
            inputs, targets = ids, torch.roll(ids, -1, dims=1)

        def loss_fn():
            loss_sum, n_tokens, _ = lm_loss(model, inputs, targets)
            return loss_sum / n_tokens
    else:
        model = MambaClassifier(model_config, num_classes, "mean").to(device)
        labels = torch.randint(0, num_classes, (batch_size,), generator=g).to(device)

        def loss_fn():
            return classification_loss(model, ids, None, labels)[0]

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=device == "cuda" and precision.startswith("bf16"))

    def step():
        with autocast:
            loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1.0 / statistics.median(times)


def configs(variant: str, task: str, seed: int, genome: Path | None, manifest: Path | None, work: Path, args):
    """(PretrainConfig, FinetuneConfig) of one run, from the mode's recipes and the variant's options."""
    spec, mode = VARIANTS[variant], "gpu" if args.gpu else "cpu"
    run = work / task / f"seed{seed}" / variant
    pre = rc.load_recipe(rc.PretrainConfig(), RECIPES / f"strands_{mode}_pretrain.toml")
    pre = rc.apply_overrides(pre, [f"out_dir={run / 'pretrain'}", f"objective={spec['objective']}",
                                   f"train.seed={seed}", *([f"data.genome={genome}"] if genome else []),
                                   *spec["sets"], *(SMOKE_PRETRAIN if args.cpu_smoke else []), *args.set_pretrain])
    ft = rc.load_recipe(rc.FinetuneConfig(), RECIPES / f"strands_{mode}_finetune.toml")
    ft = rc.apply_overrides(ft, [f"out_dir={run / 'finetune'}", f"pretrained={run / 'pretrain' / 'model'}",
                                 f"train.seed={seed}", *([f"data.manifest={manifest}"] if manifest else []),
                                 *(SMOKE_FINETUNE if args.cpu_smoke else []), *args.set_finetune])
    return pre, ft


def run_variant(task: str, variant: str, seed: int, genome: Path, manifest: Path, work: Path, args) -> dict:
    from mambadna.commands import finetune, pretrain

    spec = VARIANTS[variant]
    pre, ft = configs(variant, task, seed, genome, manifest, work, args)
    start = time.time()
    pre_summary = pretrain.run(pre)
    pre_seconds = time.time() - start
    start = time.time()
    ft_summary = finetune.run(ft)
    ft_seconds = time.time() - start
    pre_metric = ("val/bits_per_masked_base" if spec["objective"] == "mlm" else "val/bits_per_base")
    return {
        "task": task, "variant": variant, "seed": seed, "label": spec["label"], "objective": spec["objective"],
        "parameters": sum(p.numel() for p in MambaLM(pre.model).parameters()),
        "model": {k: getattr(pre.model, k) for k in ("d_model", "n_layer", "d_state", "bidirectional",
                                                      "bidirectional_weight_tie", "rc_equivariant")},
        "pretrain_steps": pre_summary["steps"], "finetune_steps": ft_summary["steps"],
        "pretrain_val_bits": pre_summary.get(pre_metric), "pretrain_val_metric": pre_metric,
        "pretrain_val_masked_accuracy": pre_summary.get("val/masked_accuracy"),
        "test_accuracy": ft_summary.get("test/accuracy"), "test_macro_f1": ft_summary.get("test/macro_f1"),
        "test_windows": int(sum(map(sum, ft_summary.get("confusion_matrix", [])))),
        "seconds": {"pretrain": round(pre_seconds, 1), "finetune": round(ft_seconds, 1)},
        "classes": ft_summary["classes"],
    }


def throughput(variants, work: Path, args, rounds: int) -> dict:
    """{variant: {"pretrain": steps/s, "finetune": steps/s}} at the recipes' batch shapes (the same for both
    tasks). Variants are measured in turn, `rounds` times, and the best round kept: other work on a shared
    machine comes and goes, and interleaving with best-of keeps it from favouring whichever ran in a quiet spell."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    best: dict = {v: {"pretrain": 0.0, "finetune": 0.0} for v in variants}
    for _ in range(rounds):
        for variant in variants:
            pre, ft = configs(variant, "throughput", 0, None, None, work, args)
            objective = VARIANTS[variant]["objective"]
            for kind, cfg, classes in (("pretrain", pre, None), ("finetune", ft, 4)):
                rate = steps_per_second(pre.model, objective, cfg.data.batch_size, cfg.data.window_bp, classes,
                                        cfg.runtime.precision, device, args.timing_steps)
                best[variant][kind] = max(best[variant][kind], rate)
    return best


def kmer_row(task: str, manifest: Path, seed: int, args) -> dict:
    from mambadna.commands.probe import kmer_baseline

    ft = rc.load_recipe(rc.FinetuneConfig(), RECIPES / f"strands_{'gpu' if args.gpu else 'cpu'}_finetune.toml")
    ft = rc.apply_overrides(ft, [*(SMOKE_FINETUNE if args.cpu_smoke else []), *args.set_finetune])
    window, n_test = ft.data.window_bp, ft.data.test_windows
    test_seqs, test_labels = species_windows(manifest, window, "test", n_test, seed)
    n_train = 64 if args.cpu_smoke else KMER_TRAIN_WINDOWS
    train_seqs, train_labels = species_windows(manifest, window, "train", n_train, seed)
    result = kmer_baseline(train_seqs, train_labels, test_seqs, test_labels)
    counts = [test_labels.count(c) for c in sorted(set(test_labels))]
    return {"task": task, "variant": "kmer", "seed": seed, "label": f"k-mer (k=4..6) + logistic regression ({n_train} windows)",
            "test_accuracy": result["accuracy"], "test_macro_f1": result["macro_f1"], "test_windows": n_test,
            "chance": max(counts) / len(test_labels)}


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def _cell(values, digits=3) -> str:
    """The mean over seeds, and with several seeds each value."""
    mean = _mean(values)
    if mean is None:
        return "–"
    each = f" ({', '.join(f'{v:.{digits}f}' for v in values)})" if len(values) > 1 else ""
    return f"{mean:.{digits}f}{each}"


def table(results: dict) -> str:
    lines = []
    seeds = results["seeds"]
    for task in results["tasks"]:
        rows = [r for r in results["rows"] if r["task"] == task]
        kmer = [r for r in rows if r["variant"] == "kmer"]
        chance = _mean([r["chance"] for r in kmer])
        lines += [f"**{task}** ({rows[0].get('test_windows')} test windows per seed, seeds {', '.join(map(str, seeds))}"
                  + (f"; majority class {chance:.3f}" if kmer else "") + ")", "",
                  "| model | parameters | test accuracy | test macro-F1 | pretraining (val) | steps/s pretrain | "
                  "steps/s fine-tune |", "|---|---|---|---|---|---|---|"]
        for variant in ["kmer", *results["variants"]]:
            group = [r for r in rows if r["variant"] == variant]
            if not group:
                continue
            accuracy = _cell([r["test_accuracy"] for r in group])
            f1 = _cell([r["test_macro_f1"] for r in group])
            if variant == "kmer":
                lines.append(f"| {group[0]['label']} | – | {accuracy} | {f1} | – | – | – |")
                continue
            first = group[0]
            unit = "bits/masked base" if first["objective"] == "mlm" else "bits/base"
            bits = _mean([r["pretrain_val_bits"] for r in group])
            pretraining = f"{bits:.3f} {unit}" if bits is not None else "–"
            masked = _mean([r["pretrain_val_masked_accuracy"] for r in group])
            if masked is not None:
                pretraining += f", masked acc. {masked:.3f}"
            rate = results.get("throughput", {}).get(variant, {})
            speed = " | ".join(f"{rate[k]:.2f}" if k in rate else "–" for k in ("pretrain", "finetune"))
            lines.append(f"| {first['label']} | {first['parameters']:,} | {accuracy} | {f1} | {pretraining} | {speed} |")
        lines.append("")
    return "\n".join(lines)


def environment() -> dict:
    pressure = Path("/proc/pressure/cpu")
    info = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.machine()})"}
    if pressure.is_file():  # share of time runnable tasks waited for a CPU: other work on the machine slows timings
        info["cpu_pressure_avg60"] = pressure.read_text().split()[2].split("=")[1] + "%"
    return info


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for results.json and table.md")
    parser.add_argument("--work", help="folder for the runs (checkpoints, logs; default OUT/runs)")
    parser.add_argument("--cpu-smoke", action="store_true", help="seconds-scale run of the whole pipeline")
    parser.add_argument("--gpu", action="store_true", help="use the strands_gpu_*.toml recipes")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one full set of runs per seed")
    parser.add_argument("--timing-steps", type=int, default=5, help="timed optimizer steps per throughput number")
    parser.add_argument("--timing-rounds", type=int, default=3, help="interleaved throughput rounds (best kept)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (torch.set_num_threads); 1 because on a shared 2-core machine OpenMP "
                             "threads spinning against other processes made runs several times slower")
    parser.add_argument("--set-pretrain", nargs="*", default=[], metavar="KEY=VALUE", help="extra pretrain settings")
    parser.add_argument("--set-finetune", nargs="*", default=[], metavar="KEY=VALUE", help="extra finetune settings")
    args = parser.parse_args(argv)
    if args.cpu_smoke and args.gpu:
        parser.error("--cpu-smoke and --gpu are exclusive")
    if args.cpu_smoke:
        args.timing_steps, args.timing_rounds = min(args.timing_steps, 2), 1
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "runs"
    out.mkdir(parents=True, exist_ok=True)
    results = {"command": " ".join(["python", "experiments/compare_strands.py", *(argv or sys.argv[1:])]),
               "mode": "cpu-smoke" if args.cpu_smoke else ("gpu" if args.gpu else "cpu"),
               "environment": environment(), "tasks": args.tasks, "variants": args.variants, "seeds": args.seeds,
               "rows": []}
    start = time.time()
    for task in args.tasks:
        genome, manifest = task_data(task, work / task / "data")
        for seed in args.seeds:
            results["rows"].append(kmer_row(task, manifest, seed, args))
            for variant in args.variants:
                print(f"== {task}, seed {seed}: {variant}", flush=True)
                row = run_variant(task, variant, seed, genome, manifest, work, args)
                results["rows"].append(row)
                print(json.dumps({k: row[k] for k in ("test_accuracy", "test_macro_f1", "seconds")}), flush=True)
                (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")  # partial results survive
    print("== throughput", flush=True)
    results["throughput"] = throughput(args.variants, work, args, args.timing_rounds)
    results["seconds"] = round(time.time() - start, 1)
    results["environment"]["cpu_pressure_avg60_end"] = environment().get("cpu_pressure_avg60")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "table.md").write_text(table(results) + "\n")
    print("\n" + table(results))
    print(f"took {results['seconds']:.0f} s; results in {out}/results.json, table in {out}/table.md")
    return results

if __name__ == "__main__":
    main()
