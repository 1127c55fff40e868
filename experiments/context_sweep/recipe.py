"""The context-sweep recipe: run configs for species classification at one context length, from scratch or from a
pretrained model, as plain functions of (dataset, context length, init, scale).

Fine-tuning follows the Mamba paper's recipe for its great-apes task by default: last-token pooling, AdamW with a
linear lr warmup then a cosine decay, sequence-length warmup for windows above 2^14 (doubling from 2^14, the batch
halving each time so the tokens per step stay constant), reverse-complement augmentation. Every length sees the
same number of bases: tokens per step (batch x window) and steps are the same at every length, so only the window
changes. Every config is written as a recipe file (`write_recipe`, the config as `run_config.json` holds it), so each
run is also one command, `mambadna finetune --recipe FILE`, that rebuilds exactly the same config (checked by
`write_recipe`); the runner calls `mambadna.commands.<name>.run(cfg)` with the config itself.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from mambadna import run_config as rc  # the one line that names the run-config module

try:  # the block split lives beside this file
    from experiments.context_sweep.splits import SplitSpec
except ImportError:  # pragma: no cover - when run as a script from this folder
    from splits import SplitSpec

INITS = ("scratch", "pretrained")


@dataclass(frozen=True)
class Scale:
    """How big a sweep is: model, steps, lengths and evaluation sizes."""

    name: str
    lengths: tuple[int, ...]
    d_model: int
    n_layer: int
    d_state: int
    tokens_per_step: int  # batch x window, the same at every length
    steps: int  # optimizer steps per fine-tuning run, the same at every length
    warmup_above_bp: int = 2**14  # windows longer than this start at this length and double (0: never)
    warmup_share: float = 0.2  # about this share of the steps is spent in the shorter warmup stages
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.1  # lr warmup
    test_bases: int = 2**23  # test windows per length: test_bases // window, clamped to the two numbers below
    min_test_windows: int = 32
    max_test_windows: int = 2048
    min_val_windows: int = 8
    pretrain_window_bp: int = 2**14
    pretrain_warmup_from_bp: int = 2**10
    pretrain_steps: int = 200
    pretrain_lr: float = 8e-3
    precision: str = "bf16-mixed"
    num_workers: int = 4
    chunk_from_bp: int = 2**20  # windows this long and longer run in chunks of chunk_bp (train.chunk_bp)
    chunk_bp: int = 2**16
    kmer_ks: tuple[int, ...] = (4, 5, 6, 7, 8)
    kmer_max_train_windows: int = 1024
    kmer_train_bases: int = 2**24  # k-mer training windows: this many bases' worth, 64 to kmer_max_train_windows
    seed: int = 0
    accelerator: str = "auto"


# One H200, the whole sweep (2 datasets x 5 lengths x 2 inits + 2 pretrainings) in about 7 minutes of wall time.
GPU = Scale(name="gpu-h200", lengths=(2**10, 2**12, 2**14, 2**16, 2**18), d_model=128, n_layer=4, d_state=16,
            tokens_per_step=2**18, steps=64, pretrain_steps=128)
# The same recipe on 1 CPU thread in about a minute (bundled great-apes subset, k = 4..6 to keep the k-mer fit
# small): a smoke test of the pipeline, not a result.
CPU_SMOKE = Scale(name="cpu-smoke", lengths=(2**7, 2**9), d_model=32, n_layer=2, d_state=8, tokens_per_step=2**11,
                  steps=6, warmup_above_bp=2**8, test_bases=2**14, min_test_windows=32, max_test_windows=128,
                  min_val_windows=8, pretrain_window_bp=2**8, pretrain_warmup_from_bp=2**7, pretrain_steps=6,
                  precision="32-true", num_workers=0, kmer_ks=(4, 5, 6), kmer_max_train_windows=64,
                  kmer_train_bases=2**13, accelerator="cpu")
SCALES = {s.name: s for s in (GPU, CPU_SMOKE)}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    split: SplitSpec | None  # None: the manifest already has a split column (e.g. whole chromosomes held out)
    pretrain_species: tuple[str, ...] | None  # None: every species' training regions
    notes: str = ""


DATASETS = {
    "great_apes": DatasetSpec(
        "great_apes", "human, chimpanzee, gorilla, orangutan: Ensembl EPO chr22 alignment blocks (maffilter-examples)",
        SplitSpec(n_runs=20, val_runs=(10,), test_runs=(5, 15)), ("human",),
        "20 runs of consecutive alignment blocks, equal in human length; runs 5 and 15 test, run 10 val, the same "
        "orthologous blocks in every species"),
    "bacteria": DatasetSpec(
        "bacteria", "E. coli 536, H. pylori F32, H. pylori Gambia94/24, S. aureus N315 (bowtie-examples, "
        "sibelia-examples)", SplitSpec(n_runs=5, val_runs=(4,), test_runs=(2,)), None,
        "each genome cut into 5 equal runs; run 2 test, run 4 val (20% each: a test run must hold a 2^18 window)"),
    "full_genomes": DatasetSpec(
        "full_genomes", "whole assemblies (hg38, panTro6, gorGor6, ponAbe3, panPan3), chromosomes held out",
        None, ("human",), "the manifest names each species' train/val/test FASTA (splits.py by-contig writes them)"),
    # the CPU smoke's second dataset: the four bundled genomes of `mambadna demo`, no alignment
    "bundled4": DatasetSpec(
        "bundled4", "bundled human chr17 piece, human and orangutan mtDNA, phage lambda (data/)",
        SplitSpec(n_runs=5, val_runs=(4,), test_runs=(2,)), None, "each genome cut into 5 equal runs"),
}


def model_config(scale: Scale):
    """The model section (a MambaConfig) of every run of a scale: the same shape from scratch and pretrained."""
    return rc.MambaConfig(d_model=scale.d_model, n_layer=scale.n_layer, d_state=scale.d_state)


def batch_for(window_bp: int, scale: Scale) -> int:
    """Windows per step: tokens_per_step // window (1 for a window longer than tokens_per_step)."""
    if window_bp >= scale.tokens_per_step:
        return 1
    if scale.tokens_per_step % window_bp:
        raise ValueError(f"tokens_per_step {scale.tokens_per_step} is not a multiple of the window {window_bp}")
    return scale.tokens_per_step // window_bp


def steps_for(window_bp: int, scale: Scale) -> int:
    """Optimizer steps: scale.steps, fewer for a window longer than tokens_per_step (one window a step), so that
    steps x batch x window, the bases seen, stays the same at every length."""
    if window_bp <= scale.tokens_per_step:
        return scale.steps
    return max(1, scale.steps * scale.tokens_per_step // window_bp)


def test_windows_for(window_bp: int, scale: Scale) -> int:
    return max(scale.min_test_windows, min(scale.max_test_windows, scale.test_bases // window_bp))


def warmup_plan(window_bp: int, scale: Scale) -> tuple[int, int]:
    """(seqlen_warmup_from_bp or 0, train windows per epoch). Stages are epochs (SeqLenWarmup): with k batches of the
    first stage per epoch, stage j runs k * 2^j steps, so the warmup takes k * (2^n - 1) of the steps."""
    batch, steps = batch_for(window_bp, scale), steps_for(window_bp, scale)
    if not scale.warmup_above_bp or window_bp <= scale.warmup_above_bp:
        return 0, batch * steps  # one epoch is the whole run
    start = scale.warmup_above_bp
    n = int(round(math.log2(window_bp / start)))
    if start * 2**n != window_bp:
        raise ValueError(f"window {window_bp} is not {start} times a power of two")
    k = max(1, round(scale.warmup_share * steps / (2**n - 1)))
    return start, batch_for(start, scale) * k


def finetune_config(dataset: str, window_bp: int, init: str, scale: Scale, manifest: str, out_dir: str,
                    pretrained: str = "") -> rc.FinetuneConfig:
    """The fine-tuning run of one row: `dataset` at `window_bp`, from scratch or from `pretrained`."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "pretrained" and not pretrained:
        raise ValueError("init='pretrained' needs the pretrained model folder")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    batch, steps = batch_for(window_bp, scale), steps_for(window_bp, scale)
    warm_from, train_windows = warmup_plan(window_bp, scale)
    test_n = test_windows_for(window_bp, scale)
    cfg = rc.FinetuneConfig(
        out_dir=out_dir,
        pretrained=pretrained if init == "pretrained" else "",
        pooling="last",
        model=model_config(scale),
        data=rc.DataSpec(manifest=manifest, window_bp=window_bp, batch_size=batch, num_workers=scale.num_workers,
                         train_windows=train_windows, val_windows=max(scale.min_val_windows, test_n // 8),
                         test_windows=test_n, reverse_complement=True),
        optim=rc.OptimSpec(lr=scale.lr, weight_decay=scale.weight_decay, warmup_fraction=scale.warmup_fraction,
                           min_lr_ratio=0.1),
        runtime=rc.RuntimeSpec(precision=scale.precision, accelerator=scale.accelerator, devices="1"),
        train=rc.TrainSpec(max_steps=steps, seed=scale.seed, ckpt_every_n_steps=steps,
                           val_every_n_steps=steps, log_every_n_steps=max(1, steps // 16),
                           progress_bar=False, seqlen_warmup_from_bp=warm_from,
                           chunk_bp=scale.chunk_bp if window_bp >= scale.chunk_from_bp else None),
    )
    return cfg


def pretrain_config(dataset: str, scale: Scale, genome: str, out_dir: str) -> rc.PretrainConfig:
    """Next-base pretraining on the training regions (`genome`: see splits.write_pretrain_genome)."""
    window = scale.pretrain_window_bp
    batch = batch_for(window, scale)
    start = scale.pretrain_warmup_from_bp
    n = int(round(math.log2(window / start))) if start and start < window else 0
    k = max(1, round(scale.warmup_share * scale.pretrain_steps / (2**n - 1))) if n else 0
    return rc.PretrainConfig(
        out_dir=out_dir,
        model=model_config(scale),
        data=rc.DataSpec(genome=genome, window_bp=window, batch_size=batch, num_workers=scale.num_workers,
                         train_windows=batch_for(start, scale) * k if n else batch * scale.pretrain_steps,
                         val_windows=max(scale.min_val_windows, 2 * batch), test_windows=batch,
                         reverse_complement=True),
        optim=rc.OptimSpec(lr=scale.pretrain_lr, weight_decay=0.1, warmup_fraction=0.1, min_lr_ratio=0.1),
        runtime=rc.RuntimeSpec(precision=scale.precision, accelerator=scale.accelerator, devices="1"),
        train=rc.TrainSpec(max_steps=scale.pretrain_steps, seed=scale.seed, ckpt_every_n_steps=scale.pretrain_steps,
                           val_every_n_steps=scale.pretrain_steps,
                           log_every_n_steps=max(1, scale.pretrain_steps // 16), progress_bar=False,
                           seqlen_warmup_from_bp=start if n else 0),
    )


# ---- configs <-> recipe files (one `mambadna ... --recipe FILE` command each) ----

def kind(cfg) -> str:
    """The `mambadna` command a config is for: finetune or pretrain."""
    return "finetune" if isinstance(cfg, rc.FinetuneConfig) else "pretrain"


def write_recipe(cfg, path) -> str:
    """Write `cfg` as a recipe file (JSON, the layout of a run's run_config.json) -> the command that runs it.
    Raises if the file does not rebuild ``cfg``."""
    from pathlib import Path

    path = Path(path)
    rc.save_config(cfg, path)
    base = rc.FinetuneConfig() if kind(cfg) == "finetune" else rc.PretrainConfig()
    if rc.to_dict(rc.load_recipe(base, path)) != rc.to_dict(cfg):
        raise AssertionError(f"the recipe {path} does not rebuild the config")
    return command(cfg, path)


def command(cfg, recipe_path) -> str:
    import shlex

    return f"mambadna {kind(cfg)} --recipe {shlex.quote(str(recipe_path))}"


def describe(scale: Scale) -> dict:
    d = dataclasses.asdict(scale)
    d["lengths"] = list(scale.lengths)
    d["kmer_ks"] = list(scale.kmer_ks)
    return d


def require_setting(section: str, key: str, why: str) -> None:
    """Fail loudly when the package lacks a setting the recipe needs (see RESULTS.md, 'package features')."""
    cls = {"data": rc.DataSpec, "train": rc.TrainSpec, "optim": rc.OptimSpec, "runtime": rc.RuntimeSpec}[section]
    if key not in {f.name for f in dataclasses.fields(cls)}:
        raise SystemExit(f"this recipe needs the setting {section}.{key} ({why}), which this mambadna does not have")


__all__ = ["Scale", "GPU", "CPU_SMOKE", "SCALES", "DATASETS", "INITS", "finetune_config", "pretrain_config",
           "write_recipe", "command", "kind", "batch_for", "test_windows_for", "warmup_plan", "field"]
