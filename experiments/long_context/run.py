"""Does context help once it is trained for? Two experiments of issue 19, through the package's own commands.

  chrx     pretraining on human chrX (the Mamba paper's Fig. 5): the same model and the same number of bases at
           windows 2^10 ... 2^20 (the length curriculum from 1 kb for the long ones), then bits per base of every
           model on the SAME held-out stretch of the test split, tiled by the model's own window (so a longer
           window gives more context to the same bases).
  species  species classification of held-out strains (data/prepare_long_context.py): scratch classifiers
           fine-tuned at windows 2^10 ... 2^20 with the same bases per step, each evaluated on the same test
           windows at every length (the train-length x test-length grid), beside a k-mer (4..6) + logistic
           regression baseline fitted on training windows of that length and scored on the same test windows.

  python experiments/long_context/run.py chrx --data .lcdata/chrX/chrX.fa.gz --out OUT [--scale gpu]
  python experiments/long_context/run.py species --data .lcdata/strains/manifest.tsv --out OUT [--scale gpu]
  python experiments/long_context/run.py species --cpu-smoke --out /tmp/x   (bundled-size data it makes itself)

Every finished row is appended at once to OUT/<experiment>.jsonl (a row names its command line, the settings,
the run's summary and the metrics), so a call cut short keeps what it finished; `--deadline-s` skips the rows
that would not fit. chrX runs longer than one call go in pieces (`--pause-after-s`; pieces.py): a paused run's row
says "paused", and the same command again continues it. experiments/long_context/report.py turns the rows into
RESULTS.md tables and plots.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from experiments.long_context import pieces  # noqa: E402
from mambadna import run_config as rc  # noqa: E402


@dataclass(frozen=True)
class Scale:
    model: list[str]            # model.* overrides
    windows: tuple[int, ...]    # log2 of the windows, in the order they run (most telling first)
    bases_per_step: int         # window * batch at the target window (the curriculum keeps it at every stage)
    micro_bp: int               # at most this many bases a micro-batch (two runs share one GPU's memory)
    steps: int                  # optimizer steps of a run
    eval_bp: int                # chrx: bases of the held-out stretch every model is scored on
    test_windows: int           # species: test windows at every length (the same ones for every model)
    kmer_train_windows: int     # species: training windows of the k-mer baseline at every length
    chunk_bp: int               # windows longer than this run in chunks (exact; bounded memory)
    precision: str
    workers: int


# v1: the scan these quality runs were planned on (v2 became the default in the same hour, measured by gpu_scan.sh)
GPU = Scale(model=["model.preset=small", "model.scan_kernel=v1"], windows=(10, 20, 14, 17, 12, 16, 18),
            bases_per_step=2**20, micro_bp=2**19, steps=64,
            eval_bp=2**22, test_windows=256, kmer_train_windows=512, chunk_bp=2**16, precision="bf16-mixed",
            workers=6)
GPU_SPECIES = replace(GPU, windows=(13, 20, 10, 17), steps=64)
# the smoke's long window (2^13) takes the automatic curriculum and runs in chunks; chrX's stays under its 4 kb stretch
CPU_SMOKE = Scale(model=["model.d_model=16", "model.n_layer=1", "model.d_state=4"], windows=(6, 13),
                  bases_per_step=2**10, micro_bp=2**9, steps=3, eval_bp=2**12, test_windows=4, kmer_train_windows=8,
                  chunk_bp=2**12, precision="32-true", workers=0)
CPU_SMOKE_CHRX = replace(CPU_SMOKE, windows=(6, 12))
# the species question at CPU size, on the real held-out strains: a 2^9-trained model against 2^13 curricula
CPU_SPECIES = Scale(model=["model.preset=tiny"], windows=(9, 13), bases_per_step=2**14, micro_bp=2**14, steps=40,
                    eval_bp=0, test_windows=128, kmer_train_windows=256, chunk_bp=2**16, precision="32-true",
                    workers=0)
# chrX at CPU size: the same tiny model and bases at every window, scored on one 2^18-base held-out stretch
CPU_CHRX = replace(CPU_SPECIES, windows=(8, 14, 10, 12), steps=150, eval_bp=2**18)


def environment() -> dict:
    import torch

    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.cuda.is_available(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"}
    try:
        import pytorch_lightning as pl
        import triton

        info.update(lightning=pl.__version__, triton=triton.__version__)
    except ImportError:
        pass
    # the GPU machine gets the tree with a stale .git: the caller passes the real commit as COMMIT
    info["commit"] = os.environ.get("COMMIT") or subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%H"], capture_output=True, text=True).stdout.strip() or "unknown"
    return info


def settings(scale: Scale, window_bp: int, extra: list[str]) -> list[str]:
    """The `--set` overrides of one training run at `window_bp`: the same bases per step at every window, at most
    `micro_bp` of them in one micro-batch (the rest accumulated), windows longer than `chunk_bp` chunked."""
    batch = max(1, min(scale.bases_per_step, scale.micro_bp) // window_bp)
    accumulate = max(1, scale.bases_per_step // (batch * window_bp))
    chunk = [f"train.chunk_bp={scale.chunk_bp}"] if window_bp > scale.chunk_bp else []
    return [*scale.model, f"data.window_bp={window_bp}", f"data.batch_size={batch}",
            f"train.accumulate_grad_batches={accumulate}", f"data.num_workers={scale.workers}",
            f"train.max_steps={scale.steps}", f"runtime.precision={scale.precision}",
            "train.log_every_n_steps=4", "train.progress_bar=false", f"train.ckpt_every_n_steps={scale.steps}",
            f"train.val_every_n_steps={max(1, scale.steps // 4)}", "data.val_windows=8", *chunk, *extra]


def command_line(command: str, overrides: list[str]) -> str:
    return f"mambadna {command} " + " ".join(f"--set {o}" for o in overrides)


def append(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:  # several run.py processes may append to one rows file (gpu_run.sh's chrX groups)
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps(row) + "\n")
    print(json.dumps({k: v for k, v in row.items() if k not in ("summary", "command")}), flush=True)


# ---- chrX: bits per base against context ----

def bits_per_base(model_dir: Path, genome: str, start: int, length: int, window_bp: int, chunk_bp: int) -> dict:
    """Mean next-base loss in bits over [start, start + length) of the genome's one long contig, tiled by windows
    of `window_bp` (each reads one more base for its last target); N bases are never scored."""
    import torch

    from mambadna.data.genome import Genome
    from mambadna.model import MambaLM
    from mambadna.objective import lm_loss
    from mambadna.tokenizer import IGNORE_INDEX, tokenizer_from_name

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = MambaLM.from_pretrained(model_dir).to(device).eval()
    tok = tokenizer_from_name(model.config.tokenizer)
    g = Genome(genome)
    contig = max(g.contigs, key=g.contigs.get)
    n_id = tok.encode("N")[0]
    total, count = 0.0, 0
    batch = max(1, 2**20 // window_bp)
    starts = list(range(start, start + length, window_bp))
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        for i in range(0, len(starts), batch):
            rows = [tok.encode(g.fetch(contig, s, s + window_bp + 1)) for s in starts[i:i + batch]]
            ids = torch.as_tensor(np.stack(rows), device=device)  # (b, window + 1)
            targets = ids[:, 1:].clone()
            targets[targets == n_id] = IGNORE_INDEX
            chunk = chunk_bp if window_bp > chunk_bp else None
            loss_sum, n, _ = lm_loss(model, ids[:, :-1], targets, chunk)
            total, count = total + float(loss_sum), count + int(n)
    return {"bits_per_base": total / max(count, 1) / math.log(2), "scored_bases": count, "windows": len(starts)}


def held_out_stretch(genome: str, eval_bp: int) -> tuple[int, int]:
    """(start, length) of the first `eval_bp` bases of the test split's longest block (the default split); eval_bp
    is a multiple of every window, so each model scores exactly these bases."""
    from mambadna.data.genome import Genome
    from mambadna.data.regions import split_regions

    g = Genome(genome)
    iv = max(split_regions(g.contigs)["test"], key=lambda x: x.length_bp)
    if iv.length_bp < eval_bp + 1:  # every window reads one base past its end for its last target
        raise SystemExit(f"{genome}: the test block ({iv.length_bp} bp) is shorter than --eval-bp {eval_bp} + 1")
    return iv.start_bp, eval_bp


def run_chrx(args, scale: Scale) -> None:
    out = Path(args.out)
    variant = variant_name(args)
    rows = Path(args.rows or out) / f"chrx{variant}.jsonl"
    extra = variant_settings(args)
    start, length = held_out_stretch(args.data, scale.eval_bp)
    print(f"held-out stretch: {start}..{start + length} ({length} bp)", flush=True)
    paused = False
    for log2 in scale.windows:
        window = 2**log2
        if paused or time.time() > args.deadline:  # after a pause this call's time is up, whatever the deadline
            append(rows, {"window_bp": window, "status": "skipped: deadline"})
            continue
        folder = out / f"chrx{variant}_L{log2}"
        overrides = settings(scale, window, [f"data.genome={args.data}", f"out_dir={folder}",
                                             "data.reverse_complement=true", *extra])
        summary_file = folder / "summary.json"
        if args.rescore and summary_file.is_file():  # score the finished run again (other --eval-windows)
            summary = json.loads(summary_file.read_text())
            trained = pieces.finished_totals(folder, summary)
        else:  # afresh, or the paused run in the folder continued (pieces.py)
            summary, trained = pieces.train(folder, overrides, args.pause_at)
            if summary is None:
                paused = True
                append(rows, {"window_bp": window, **trained, "variant": variant.lstrip("_"),
                              "command": command_line("pretrain", overrides)})
                continue
        model_dir = Path(summary["model_dir"])
        score = bits_per_base(model_dir, args.data, start, length, window, scale.chunk_bp)
        # the same model scored at other windows: does it use context longer than it was trained on? (its own
        # window's score is the one above, not computed again)
        cross = {str(2**e): score["bits_per_base"] if 2**e == window else
                 bits_per_base(model_dir, args.data, start, length, 2**e, scale.chunk_bp)["bits_per_base"]
                 for e in sorted(args.eval_windows or ())}
        append(rows, {"window_bp": window, "status": "ok", "variant": variant.lstrip("_"), **score,
                      "eval_start": start, "eval_bp": length, "steps": summary["steps"], **trained,
                      "val_bits": summary.get("val/bits_per_base"), "bits_at": cross,
                      "command": command_line("pretrain", overrides), "summary": summary})


# ---- species: accuracy against train and test length ----

def test_windows(manifest: str, window_bp: int, split: str, count: int, seed: int):
    """(raw windows, labels) of a split at `window_bp`: the same for every model and the k-mer baseline."""
    from mambadna.data.species import SpeciesWindowDataset

    ds = SpeciesWindowDataset(manifest, window_bp, split=split, num_windows=count, seed=seed, test_fraction=0.0)
    return ds.raw_windows()


def classify(model_dir: Path, seqs: list[bytes], chunk_bp: int) -> list[str]:
    import torch

    from mambadna.checkpoint import load
    from mambadna.tokenizer import tokenizer_from_name

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load(model_dir).to(device).eval()
    tok = tokenizer_from_name(model.config.tokenizer)
    window = len(seqs[0])
    batch = max(1, 2**20 // window)
    preds = []
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        for i in range(0, len(seqs), batch):
            ids = torch.as_tensor(np.stack([tok.encode(s) for s in seqs[i:i + batch]]), device=device)
            logits = model(ids, None, chunk_bp if window > chunk_bp else None)
            preds += [model.class_names[j] for j in logits.argmax(-1).tolist()]
    return preds


def scores(truth: list[str], pred: list[str]) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(truth, pred)), "macro_f1": float(f1_score(truth, pred, average="macro"))}


def training_strains_fasta(manifest: str, path: Path) -> Path:
    """One FASTA of every training strain of a manifest (the rows whose split is not `test`), each record renamed
    `<species>_<file stem>_<record>`: what a pretrained row's backbone is pretrained on (no test strain in it)."""
    from mambadna.data.genome import Genome
    from mambadna.data.species import read_manifest

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        for row in read_manifest(manifest):
            if row.split == "test":
                continue
            g = Genome(str(row.path))
            stem = row.path.name.split(".")[0]
            for contig, n in g.contigs.items():
                out.write(f">{row.species}_{stem}_{contig}\n".encode() + g.fetch(contig, 0, n) + b"\n")
    return path


def pretrain_backbone(args, scale: Scale) -> str:
    """Pretrain a causal LM on the training strains at 2^args.pretrain_window (the same model shape, steps and bases
    per step as the fine-tunes; the curriculum where the window is long); returns its model folder."""
    from mambadna.commands import pretrain

    out = Path(args.out)
    genome = training_strains_fasta(args.data, out / "pretrain_data" / "training_strains.fa")
    window = 2**args.pretrain_window
    overrides = settings(scale, window, [f"data.genome={genome}", f"out_dir={out / f'pretrain_L{args.pretrain_window}'}",
                                         "data.reverse_complement=true"])
    summary = pretrain.run(rc.apply_overrides(rc.PretrainConfig(), overrides))
    print(f"pretrained backbone: {summary['model_dir']} (val bits/base {summary.get('val/bits_per_base')})",
          flush=True)
    return summary["model_dir"]


def variant_name(args) -> str:
    """What a run varies from the scale's recipe, in its rows file's name and its run folders' names ("" for none)."""
    return "".join(part for part, used in ((f"_lr{args.species_lr}", args.species_lr),
                                           (f"_first{args.first_fraction}", args.first_fraction is not None),
                                           (f"_pre{args.pretrain_window}", args.pretrain_window),
                                           (f"_seed{args.seed}", args.seed), (f"_{args.tag}", args.tag)) if used)


def variant_settings(args) -> list[str]:
    """The `--set` overrides of the variant arguments both experiments take: --first-fraction, --seed, --set."""
    first = [] if args.first_fraction is None else [f"train.seqlen_warmup_first_fraction={args.first_fraction}"]
    return [*first, *([f"train.seed={args.seed}"] if args.seed else []), *(args.set or [])]


def run_species(args, scale: Scale) -> None:
    from mambadna.commands import finetune
    from mambadna.commands.probe import kmer_baseline
    from mambadna.commands.train import CLASSIFIER_FIRST_FRACTION

    out = Path(args.out)
    variant = variant_name(args)
    rows = Path(args.rows or out) / ("species_kmer.jsonl" if args.part == "kmer" else f"species{variant}.jsonl")
    # the test windows of every length, drawn once: the same for every model and for the k-mer baseline
    tested = [int(x) for x in args.test_windows.split(",")] if args.test_windows else scale.windows
    tests = {log2: test_windows(args.data, 2**log2, "test", scale.test_windows, seed=1) for log2 in sorted(tested)}
    if args.part in ("kmer", "all"):
        for log2, (seqs, labels) in tests.items():
            train_seqs, train_labels = test_windows(args.data, 2**log2, "train", scale.kmer_train_windows, seed=2)
            kmer = kmer_baseline(train_seqs, train_labels, seqs, labels)
            counts = {c: labels.count(c) for c in sorted(set(labels))}
            append(rows, {"kind": "kmer", "test_bp": 2**log2, **kmer, "test_windows": len(seqs),
                          "label_counts": counts, "train_windows": len(train_seqs)})
    if args.part == "kmer":
        return
    backbone = pretrain_backbone(args, scale) if args.pretrain_window else None
    for log2 in scale.windows:
        window = 2**log2
        if time.time() > args.deadline:
            append(rows, {"kind": "model", "train_bp": window, "status": "skipped: deadline"})
            continue
        extra = [f"optim.lr={args.species_lr}"] if args.species_lr else []
        extra += [f"pretrained={backbone}"] if backbone else []
        extra += variant_settings(args)
        overrides = settings(scale, window, [f"data.manifest={args.data}", f"out_dir={out / f'species_L{log2}{variant}'}",
                                             "data.test_fraction=0", f"data.test_windows={scale.test_windows}",
                                             "data.reverse_complement=true", *extra])
        cfg = rc.apply_overrides(rc.FinetuneConfig(), overrides)
        began = time.time()
        summary = finetune.run(cfg)
        trained = time.time() - began
        model_dir = Path(summary["model_dir"])
        row = {"kind": "model", "train_bp": window, "status": "trained", "lr": cfg.optim.lr,
               "first_fraction": (CLASSIFIER_FIRST_FRACTION if cfg.train.seqlen_warmup_first_fraction is None
                                  else cfg.train.seqlen_warmup_first_fraction),
               "first_fraction_default": cfg.train.seqlen_warmup_first_fraction is None, "pretrained": backbone,
               "seed": cfg.train.seed, "set": list(args.set or []),
               "bases_trained": summary.get("bases_trained"), "steps": summary["steps"],
               "train_s": round(trained, 1), "val_accuracy": summary.get("val/accuracy"),
               # finetune's own test: its own draw of test_windows windows of the unseen strains, at the training
               # window; written before the grid so that a call cut during the grid keeps it
               "own_test": {"accuracy": summary.get("test/accuracy"), "macro_f1": summary.get("test/macro_f1"),
                            "windows": scale.test_windows},
               "command": command_line("finetune", overrides), "summary": summary}
        append(rows, row)
        grid = {}
        for test_log2, (seqs, labels) in tests.items():
            if time.time() > args.deadline and test_log2 != log2:
                continue
            grid[2**test_log2] = scores(labels, classify(model_dir, seqs, scale.chunk_bp))
        append(rows, {**row, "status": "ok", "grid": grid})


def smoke_data(root: Path) -> tuple[str, str]:
    """A genome and a held-out-strain manifest for --cpu-smoke: two bundled genomes, each cut into a training
    'strain' (its first 70%) and a test 'strain' (the rest)."""
    from mambadna.data import bundled_path
    from mambadna.data.genome import Genome

    root.mkdir(parents=True, exist_ok=True)
    rows = ["species\tfasta\tsplit"]
    for name in ("lambda", "hg19_chr17_part"):
        g = Genome(bundled_path(name))
        contig, n = next(iter(g.contigs.items()))
        cut = int(n * 0.7)
        for part, (a, b), split in (("train", (0, cut), ""), ("test", (cut, n), "test")):
            (root / f"{name}_{part}.fa").write_bytes(b">" + f"{name}_{part}".encode() + b"\n" + g.fetch(contig, a, b)
                                                     + b"\n")
            rows.append(f"{name}\t{name}_{part}.fa\t{split}")
    (root / "manifest.tsv").write_text("\n".join(rows) + "\n")
    return str(bundled_path("lambda")), str(root / "manifest.tsv")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=("chrx", "species"))
    parser.add_argument("--data", help="chrx: the genome; species: the manifest (data/prepare_long_context.py)")
    parser.add_argument("--out", required=True, help="folder of the runs")
    parser.add_argument("--rows", help="folder of the .jsonl result rows (default: --out)")
    parser.add_argument("--scale", choices=("gpu", "cpu"), default="gpu", help="cpu: the tiny model, short windows")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the bundled genomes (CI)")
    parser.add_argument("--windows", help="log2 window lengths, comma-separated (default: the scale's)")
    parser.add_argument("--test-windows", help="species: log2 test lengths, comma-separated (default: --windows)")
    parser.add_argument("--micro-bp", type=int, help="log2 of the most bases in one micro-batch (default: the scale's; "
                        "lower it where several runs share a GPU; the bases per step stay)")
    parser.add_argument("--steps", type=int, help="optimizer steps a run (default: the scale's)")
    parser.add_argument("--eval-windows", type=lambda v: [int(x) for x in v.split(",")],
                        help="chrx: log2 windows each model is also scored in (tiling the same held-out stretch, "
                             "so at most its length)")
    parser.add_argument("--rescore", action="store_true",
                        help="chrx: runs whose folder in --out holds a finished run are scored again, not retrained")
    parser.add_argument("--deadline-s", type=float, default=1e9, help="skip rows that would start after this many s")
    parser.add_argument("--pause-after-s", type=float,
                        help="chrx: a run still training this many s after run.py started stops with a checkpoint "
                             "(its row says paused); the same command again continues it (pieces.py)")
    parser.add_argument("--species-lr", type=float, help="species: optim.lr of the fine-tunes (default: finetune's)")
    parser.add_argument("--first-fraction", type=float, help="train.seqlen_warmup_first_fraction of every run")
    parser.add_argument("--pretrain-window", type=int,
                        help="species: log2 window of a backbone pretrained on the training strains first (the same "
                             "steps and bases per step); the fine-tunes start from it (default: from scratch)")
    parser.add_argument("--seed", type=int, default=0, help="train.seed of every run (another initialisation and "
                        "window draw; the test windows and chrX's held-out stretch stay the same)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="one more setting of every run (repeatable), e.g. train.seqlen_warmup_from_bp=512 "
                        "or data.num_workers=3")
    parser.add_argument("--tag", help="a name for the --set variant (its rows file and run folders)")
    parser.add_argument("--part", choices=("all", "models", "kmer"), default="all",
                        help="species: the models, the k-mer baseline (CPU; run it beside the models), or both")
    args = parser.parse_args(argv)
    args.deadline = time.time() + args.deadline_s
    args.pause_at = None if args.pause_after_s is None else time.time() + args.pause_after_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chrx = args.experiment == "chrx"
    scale = (GPU if chrx else GPU_SPECIES) if not args.cpu_smoke else (CPU_SMOKE_CHRX if chrx else CPU_SMOKE)
    if args.scale == "cpu" and not args.cpu_smoke:
        scale = CPU_CHRX if chrx else CPU_SPECIES
    if args.cpu_smoke:
        genome, manifest = smoke_data(out / "data")
        args.data = args.data or (genome if args.experiment == "chrx" else manifest)
    if args.windows:
        scale = replace(scale, windows=tuple(int(x) for x in args.windows.split(",")))
    if args.steps:
        scale = replace(scale, steps=args.steps)
    if args.micro_bp:
        scale = replace(scale, micro_bp=2**args.micro_bp)
    if not args.data:
        parser.error("--data is required (see data/prepare_long_context.py)")
    if args.pause_after_s is not None and not chrx:
        parser.error("--pause-after-s: chrx runs only (a fine-tune runs in one go)")
    if chrx and any(2**e > scale.eval_bp for e in args.eval_windows or ()):
        parser.error(f"--eval-windows: the held-out stretch is {scale.eval_bp} bases; a longer window would score "
                     "bases outside it")
    env = {**environment(), "scale": scale.__dict__, "data": args.data}
    Path(args.rows or out).mkdir(parents=True, exist_ok=True)
    (Path(args.rows or out) / f"{args.experiment}_env.json").write_text(json.dumps(env, indent=1) + "\n")
    (run_chrx if args.experiment == "chrx" else run_species)(args, scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
