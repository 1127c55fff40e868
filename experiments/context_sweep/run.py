"""Run the context sweep: species accuracy against context length, from scratch, pretrained, and k-mer counts.

  python experiments/context_sweep/run.py --cpu-smoke --out runs/sweep_smoke        # CI-sized, bundled data
  python experiments/context_sweep/run.py --scale gpu-h200 --out runs/sweep \\
      --data great_apes=/data/great_apes_full/manifest.tsv --data bacteria=/data/bacteria/manifest.tsv

For each dataset: write the block splits (splits.py; the same held-out blocks in every species), pretrain once on
the training regions (of human for the great apes, of every species otherwise), then for each context length train
the classifier from scratch and from the pretrained model, and fit the k-mer (k = 4..8) + logistic-regression
baseline on the same test windows. Every model run is a config (recipe.py), written as a recipe file beside its run
folder, so each row is also one command, `mambadna finetune --recipe FILE` (printed, and stored in the row); by
default the runner calls `mambadna.commands.finetune.run(cfg)` (or pretrain's) in this process with that config
(``--subprocess`` runs the command as a separate `python -m mambadna` process instead). Rows go to
``OUT/rows.jsonl`` as they finish; ``report.py`` turns them into RESULTS.md and the plot.

``--parts kmer`` / ``--parts models`` run one half (the GPU script runs the k-mer half on the CPU cores alongside
the models), ``--deadline UNIX_TIME`` skips the model rows that would not finish in time (recorded as skipped).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gc
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.context_sweep import recipe as R  # noqa: E402
from experiments.context_sweep import splits as S  # noqa: E402

BUNDLED = {"great_apes": ROOT / "data" / "great_apes" / "manifest.tsv"}


# ---- data ----

def bundled4_manifest(out: Path) -> Path:
    """species<TAB>fasta of the four bundled genomes of `mambadna demo` (data/README.md)."""
    files = {"human_chr17": "chr17.hg19.part.fa", "human_mt": "MT-human.fa", "orangutan_mt": "MT-orang.fa",
             "phage_lambda": "lambda_phage.fa"}
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bundled4.tsv"
    path.write_text("species\tfasta\n" + "".join(f"{k}\t{ROOT / 'data' / v}\n" for k, v in files.items()))
    return path


def has_split_column(manifest: Path) -> bool:
    with open(manifest, newline="") as fh:
        return "split" in (csv.DictReader(fh, delimiter="\t").fieldnames or [])


def prepare_dataset(name: str, source: Path, out: Path) -> tuple[Path, dict | None]:
    """(split manifest, splits.json dict or None) for a dataset; writes the split FASTAs under out/data."""
    spec = R.DATASETS[name]
    if spec.split is None or has_split_column(source):
        return source, None  # the manifest already says which file is which split
    data = out / "data"
    done = data / "splits.json"
    if done.is_file() and (data / "manifest.tsv").is_file():
        info = json.loads(done.read_text())
        S.check_disjoint(info)
        return data / "manifest.tsv", info
    info = S.write_block_splits(S.read_manifest(source), spec.split, data)
    return data / "manifest.tsv", info


def pretrain_genome(name: str, manifest: Path, out: Path) -> tuple[Path, list[str]]:
    """One FASTA of the pretraining species' training regions, and the species it holds."""
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    wanted = R.DATASETS[name].pretrain_species or sorted({r["species"] for r in rows})
    train = [r for r in rows if r["species"] in wanted and r.get("split") == "train"]
    if not train:
        raise SystemExit(f"{manifest}: no training rows for {wanted}")
    if len(train) == 1:
        fasta = Path(train[0]["fasta"])
        return (fasta if fasta.is_absolute() else manifest.parent / fasta), list(wanted)
    target = out / "data" / f"pretrain_{'_'.join(wanted) if len(wanted) < 3 else 'all'}.fa"
    if not target.is_file():
        contigs = []
        for r in train:
            fasta = Path(r["fasta"])
            fasta = fasta if fasta.is_absolute() else manifest.parent / fasta
            contigs += [(f"{r['species']}__{c}", s) for c, s in S.read_fasta(fasta).items()]
        target.parent.mkdir(parents=True, exist_ok=True)
        S._write_fasta(target, contigs)
    return target, list(wanted)


# ---- the test windows: one fixed set per (dataset, length), the same for every model ----

def _digest(pairs) -> str:
    h = hashlib.sha256()
    for label, ids in pairs:
        h.update(int(label).to_bytes(2, "little"))
        h.update(ids.astype("uint8").tobytes())
    return h.hexdigest()[:16]


def species_windows(manifest: Path, window_bp: int, split: str, count: int, seed: int, max_n_fraction: float = 0.1):
    """(raw sequences, label names, digest of the token ids) of the windows SpeciesDataModule gives for a split."""
    from mambadna.data import SpeciesWindowDataset

    ds = SpeciesWindowDataset(manifest, window_bp, split=split, num_windows=count, seed=seed,
                              max_n_fraction=max_n_fraction)
    seqs, labels = ds.raw_windows()
    index = {name: i for i, name in enumerate(ds.class_names)}
    pairs = [(index[label], ds.reader.tokenizer.encode(raw)) for raw, label in zip(seqs, labels)]
    return seqs, labels, _digest(pairs)


def datamodule_test_digest(cfg) -> tuple[str, dict]:
    """Digest and label counts of the test windows as the fine-tuning run's datamodule builds them."""
    import dataclasses

    from mambadna.tokenizer import tokenizer_from_name

    data = dataclasses.replace(cfg.data, batch_size=64, num_workers=0)
    dm = data.datamodule("classify", tokenizer_from_name(cfg.model.tokenizer), cfg.out_dir, seed=cfg.train.seed)
    pairs, counts = [], {}
    for batch in dm.test_dataloader():
        for ids, label in zip(batch["input_ids"].numpy(), batch["label"].tolist()):
            pairs.append((label, ids))
            name = dm.class_names[label]
            counts[name] = counts.get(name, 0) + 1
    return _digest(pairs), counts


# ---- rows ----

def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def count_params(model_dir: Path) -> int | None:
    """Parameters in a saved model (model.safetensors), or None when there is none."""
    path = model_dir / "model.safetensors"
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return int(sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys()))


def index_genomes(manifest: Path) -> None:
    """Open every FASTA of a manifest once, so its index and statistics exist before parallel readers start."""
    from mambadna.data import Genome
    from mambadna.data.species import read_manifest

    for row in read_manifest(manifest):
        Genome(row.path)


def run_step(cfg, recipe: Path, use_subprocess: bool) -> tuple[int, str]:
    """Run one config: `mambadna.commands.<kind>.run(cfg)` here, or its recipe's command as its own process ->
    (exit code, the command). A failure is reported as a code, like the command line's."""
    import importlib

    recipe.parent.mkdir(parents=True, exist_ok=True)
    line = R.write_recipe(cfg, recipe)
    if use_subprocess:
        return subprocess.call([sys.executable, "-m", "mambadna", R.kind(cfg), "--recipe", str(recipe)],
                               cwd=os.getcwd()), line
    try:
        importlib.import_module(f"mambadna.commands.{R.kind(cfg)}").run(cfg)
        return 0, line
    except Exception as exc:  # noqa: BLE001 (a failed row is recorded, the sweep goes on)
        from mambadna.errors import error_line

        message, code = error_line(exc)
        print(f"error: {message}", file=sys.stderr, flush=True)
        return code, line
    finally:
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass


def calibrate(scale, lengths: list[int], num_classes: int = 4, steps: int = 3) -> dict[int, float]:
    """Seconds per optimizer step of the scale's classifier at each length (tokens per step fixed), measured with
    the package's model on this machine: 1 warm-up + ``steps`` timed steps, bf16 autocast on CUDA."""
    import torch

    from mambadna.model import MambaClassifier

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = MambaClassifier(R.model_config(scale), num_classes, "last").to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    out = {}
    for L in lengths:
        batch = R.batch_for(L, scale)
        ids = torch.randint(0, 4, (batch, L), device=dev)
        labels = torch.randint(0, num_classes, (batch,), device=dev)

        def step():
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
                loss = torch.nn.functional.cross_entropy(model(ids).float(), labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        step()
        if dev == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if dev == "cuda":
            torch.cuda.synchronize()
        out[L] = (time.perf_counter() - t0) / steps
    del model, opt
    gc.collect()
    return out


def plan_steps(per_step: dict[int, float], scale, n_datasets: int, n_inits: int, budget_s: float,
               pretrain: bool = True, overhead_s: float = 6.0, pretrain_ratio: float = 2.0, lo: int = 16,
               hi: int = 1000) -> dict:
    """The one step count S (the same for every length) that fits the model rows, and the pretraining runs of
    ``pretrain_ratio`` x S steps, in ``budget_s``: each run costs S x (seconds per step at its length), plus its test
    and validation windows (forward only, about a third of a training step per window), plus ``overhead_s``."""
    # x S; a window longer than tokens_per_step runs S * tokens_per_step / window steps (recipe.steps_for)
    per_run = sum(sec * min(1.0, scale.tokens_per_step / L) for L, sec in per_step.items()) * n_inits * n_datasets
    fixed = 0.0
    for L, sec in per_step.items():
        tokens = (R.test_windows_for(L, scale) * 1.25) * L  # test + validation windows
        fixed += (tokens / scale.tokens_per_step) * sec / 3 * n_inits * n_datasets
    fixed += overhead_s * len(per_step) * n_inits * n_datasets
    pre = per_step.get(scale.pretrain_window_bp, max(per_step.values())) * pretrain_ratio * n_datasets \
        if pretrain else 0.0
    pre_fixed = overhead_s * n_datasets if pre else 0.0
    steps = int((budget_s - fixed - pre_fixed) / (per_run + pre)) if per_run + pre > 0 else hi
    steps = max(lo, min(hi, steps))
    return {"steps": steps, "pretrain_steps": int(round(pretrain_ratio * steps)) if pre else 0,
            "estimated_s": round(steps * (per_run + pre) + fixed + pre_fixed, 1), "budget_s": budget_s,
            "seconds_per_step": {str(k): round(v, 4) for k, v in per_step.items()}, "overhead_s": overhead_s}


class Rows:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict) -> dict:
        row = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **row}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output folder (rows.jsonl, per-run folders)")
    p.add_argument("--cpu-smoke", action="store_true", help="the CI-sized sweep on bundled data (--scale cpu-smoke)")
    p.add_argument("--scale", choices=sorted(R.SCALES), help="sweep size (default gpu-h200)")
    p.add_argument("--data", action="append", default=[], metavar="NAME=MANIFEST",
                   help=f"dataset and its manifest (datasets: {', '.join(R.DATASETS)}); repeatable, in run order")
    p.add_argument("--lengths", help="comma-separated log2 context lengths (default: the scale's)")
    p.add_argument("--inits", default="scratch,pretrained", help="comma-separated: scratch, pretrained")
    p.add_argument("--parts", default="kmer,models", help="comma-separated: kmer, models")
    p.add_argument("--steps", type=int, help="override the scale's fine-tuning steps (bases seen change with it)")
    p.add_argument("--finetune-set", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra setting for every fine-tuning run, e.g. pooling=mean or optim.lr=2e-3 (ablations; "
                   "it goes into each run's recipe file)")
    p.add_argument("--deadline", type=float, help="unix time: skip model rows that would end after it")
    p.add_argument("--budget-s", type=float, help="fit the step count to this many seconds of model runs: measure "
                   "seconds per step at each length first, then use the one step count that fits (the same at every "
                   "length; pretraining gets twice as many)")
    p.add_argument("--prepare-only", action="store_true", help="write the block splits and stop")
    p.add_argument("--smoke-bundled4", action="store_true", help="with --cpu-smoke: also the four bundled genomes of "
                   "`mambadna demo` (no alignment: per-genome runs; pretraining on every species)")
    p.add_argument("--subprocess", action="store_true", help="run each mambadna command as its own process")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed command")
    p.add_argument("--no-report", action="store_true", help="do not write RESULTS.md / the plot at the end")
    a = p.parse_args(argv)

    scale = R.SCALES[a.scale or ("cpu-smoke" if a.cpu_smoke else "gpu-h200")]
    if a.steps:
        import dataclasses

        scale = dataclasses.replace(scale, steps=a.steps)
    lengths = [2 ** int(x) for x in a.lengths.split(",")] if a.lengths else list(scale.lengths)
    inits = [x for x in a.inits.split(",") if x]
    parts = set(a.parts.split(","))
    datasets = []
    for item in a.data:
        name, _, path = item.partition("=")
        if name not in R.DATASETS or not path:
            p.error(f"--data wants NAME=MANIFEST with NAME in {', '.join(R.DATASETS)}, got {item!r}")
        datasets.append((name, Path(path)))
    if not datasets:
        if not a.cpu_smoke:
            p.error("give --data NAME=MANIFEST (or --cpu-smoke for the bundled data)")
        datasets = [("great_apes", BUNDLED["great_apes"])]
        if a.smoke_bundled4:
            datasets.append(("bundled4", bundled4_manifest(a.out / "bundled4")))
    if scale.accelerator == "cpu":
        import torch

        torch.set_num_threads(1)  # tiny models: more threads only spin against other processes on a shared CPU
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    rows = Rows(out / ("rows.jsonl" if parts >= {"kmer", "models"} else f"rows_{'_'.join(sorted(parts))}.jsonl"))
    device = device_name()
    failures = 0

    prepared = {}
    for name, source in datasets:
        manifest, info = prepare_dataset(name, source, out / name)
        prepared[name] = manifest
        if info is not None:
            bp = {sp: {s: e[s]["bp"] for s in S.SPLITS} for sp, e in info["species"].items()}
            print(f"[{name}] block split: {json.dumps(bp)}")

    if a.prepare_only:
        for manifest in prepared.values():
            index_genomes(manifest)
        return 0

    per_step = None
    if "models" in parts and a.budget_s:
        per_step = calibrate(scale, lengths)
        plan = plan_steps(per_step, scale, len(datasets), len(inits), a.budget_s, pretrain="pretrained" in inits)
        import dataclasses

        scale = dataclasses.replace(scale, steps=plan["steps"], pretrain_steps=plan["pretrain_steps"] or
                                    scale.pretrain_steps)
        (out / "plan.json").write_text(json.dumps(plan, indent=1) + "\n")
        print(f"step plan for a {a.budget_s:.0f} s budget on {device}: {json.dumps(plan)}", flush=True)

    (out / f"sweep_{'_'.join(sorted(parts))}.json").write_text(json.dumps(
        {"scale": R.describe(scale), "lengths": lengths, "inits": inits, "datasets": [[n, str(m)] for n, m in datasets],
         "device": device, "python": sys.version.split()[0], "argv": sys.argv[1:]}, indent=1) + "\n")

    # k-mer baseline + test-window identity
    if "kmer" in parts:
        from mambadna.commands.probe import kmer_baseline

        for name, _ in datasets:
            manifest = prepared[name]
            for L in lengths:
                cfg = R.finetune_config(name, L, "scratch", scale, str(manifest), str(out / name / f"L{L}"))
                n_test = cfg.data.test_windows
                t0 = time.time()
                test_seqs, test_labels, digest = species_windows(manifest, L, "test", n_test, scale.seed)
                again = species_windows(manifest, L, "test", n_test, scale.seed)[2]
                dm_digest, dm_counts = datamodule_test_digest(cfg)
                if not (digest == again == dm_digest):
                    raise SystemExit(f"[{name} {L}] test windows are not deterministic: {digest} {again} {dm_digest}")
                n_train = min(scale.kmer_max_train_windows, max(64, scale.kmer_train_bases // L))
                train_seqs, train_labels, _ = species_windows(manifest, L, "train", n_train, scale.seed)
                result = kmer_baseline(train_seqs, train_labels, test_seqs, test_labels, ks=scale.kmer_ks)
                counts = {c: test_labels.count(c) for c in sorted(set(test_labels))}
                row = rows.add({"dataset": name, "window_bp": L, "method": "kmer", "status": "ok",
                                "accuracy": result["accuracy"], "macro_f1": result["macro_f1"],
                                "test_windows": len(test_labels), "test_digest": digest, "test_counts": counts,
                                "chance": max(counts.values()) / len(test_labels),
                                "train_windows": n_train, "ks": list(scale.kmer_ks), "seconds": time.time() - t0,
                                "device": f"CPU ({os.cpu_count()} cores)", "scale": scale.name})
                print(f"[{name} 2^{L.bit_length() - 1}] k-mer k={scale.kmer_ks[0]}..{scale.kmer_ks[-1]} "
                      f"acc {row['accuracy']:.3f} F1 {row['macro_f1']:.3f} ({len(test_labels)} test windows, "
                      f"digest {digest}, {row['seconds']:.0f} s)", flush=True)

    if "models" in parts:
        pretrained = {}
        if "pretrained" in inits:
            for name, _ in datasets:
                genome, species = pretrain_genome(name, prepared[name], out / name)
                cfg = R.pretrain_config(name, scale, str(genome), str(out / name / "pretrain"))
                recipe = out / name / "pretrain.recipe.json"
                print(f"[{name}] pretraining on the training regions of {', '.join(species)}:\n  "
                      f"{R.command(cfg, recipe)}", flush=True)
                t0 = time.time()
                code, line = run_step(cfg, recipe, a.subprocess)
                seconds = time.time() - t0
                summary = _read_json(out / name / "pretrain" / "summary.json")
                rows.add({"dataset": name, "method": "pretrain", "status": "ok" if code == 0 else f"failed ({code})",
                          "species": species, "command": line, "seconds": seconds, "device": device,
                          "window_bp": cfg.data.window_bp, "steps": summary.get("steps"),
                          "bases_seen": cfg.train.max_steps * cfg.data.batch_size * cfg.data.window_bp,
                          "val_bits_per_base": summary.get("val/bits_per_base"),
                          "params": count_params(out / name / "pretrain" / "model"), "scale": scale.name})
                if code != 0:
                    failures += 1
                    if a.fail_fast:
                        return 1
                else:
                    pretrained[name] = out / name / "pretrain" / "model"
        longest = 0.0
        for L in lengths:
            for name, _ in datasets:
                for init in inits:
                    run_dir = out / name / f"L{L}_{init}"
                    if init == "pretrained" and name not in pretrained:
                        rows.add({"dataset": name, "window_bp": L, "method": init, "status": "skipped (no pretrained "
                                  "model)"})
                        continue
                    cfg = R.finetune_config(name, L, init, scale, str(prepared[name]), str(run_dir),
                                            str(pretrained.get(name, "")))
                    if a.finetune_set:
                        cfg = R.rc.apply_overrides(cfg, a.finetune_set)
                    recipe = run_dir.with_name(run_dir.name + ".recipe.json")
                    base = {"dataset": name, "window_bp": L, "method": init, "command": R.command(cfg, recipe),
                            "steps": cfg.train.max_steps, "batch_size": cfg.data.batch_size,
                            "bases_seen": cfg.train.max_steps * cfg.data.batch_size * L,
                            "seqlen_warmup_from_bp": cfg.train.seqlen_warmup_from_bp,
                            "chunk_bp": cfg.train.chunk_bp,
                            "test_windows": cfg.data.test_windows, "device": device, "scale": scale.name}
                    if init == "pretrained":
                        base["pretrained_on"] = _pretrain_species(rows.path, name)
                    expected = 1.3 * longest if per_step is None else 1.2 * (cfg.train.max_steps * per_step[L] + 6.0)
                    if a.deadline and time.time() + expected > a.deadline:
                        rows.add({**base, "status": "skipped (deadline)"})
                        print(f"[{name} 2^{L.bit_length() - 1} {init}] skipped: would pass the deadline", flush=True)
                        continue
                    print(f"[{name} 2^{L.bit_length() - 1} {init}]\n  {base['command']}", flush=True)
                    digest, counts = datamodule_test_digest(cfg)
                    t0 = time.time()
                    code, _ = run_step(cfg, recipe, a.subprocess)
                    seconds = time.time() - t0
                    longest = max(longest, seconds)
                    summary = _read_json(run_dir / "summary.json")
                    status = "ok" if code == 0 and "test/accuracy" in summary else f"failed ({code})"
                    matrix = summary.get("confusion_matrix")
                    row = {**base, "status": status, "seconds": seconds, "test_digest": digest, "test_counts": counts,
                           "accuracy": summary.get("test/accuracy"), "macro_f1": summary.get("test/macro_f1"),
                           "steps_done": summary.get("steps"), "classes": summary.get("classes"),
                           "confusion_matrix": matrix, "params": count_params(run_dir / "model")}
                    if matrix is not None and summary.get("classes"):
                        seen = {c: int(sum(r)) for c, r in zip(summary["classes"], matrix)}
                        row["test_counts_match"] = seen == counts
                    rows.add(row)
                    if status != "ok":
                        failures += 1
                        if a.fail_fast:
                            return 1
                    else:
                        print(f"  -> acc {row['accuracy']:.3f} F1 {row['macro_f1']:.3f} in {seconds:.0f} s", flush=True)
    if not a.no_report:
        from experiments.context_sweep import report

        report.main([str(out)])
    return 1 if failures else 0


def _pretrain_species(path: Path, name: str):
    for line in path.read_text().splitlines()[::-1]:
        row = json.loads(line)
        if row.get("dataset") == name and row.get("method") == "pretrain":
            return row.get("species")
    return None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    sys.exit(main())
