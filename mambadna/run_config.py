"""Run configurations: nested dataclasses, changed by a recipe file (JSON/TOML), flags or `--set key=value`.

Each setting is declared once, here, with its help text (`setting(..., help=...)`); the CLI builds its flags and
their help from these fields (mambadna/cli.py), so a new setting is added in one place. The sections are shared by
every command's settings (the other commands' are in mambadna/commands/configs.py): `runtime` (where a command
runs), `data` (which builds the command's DataModule: the one DataSpec -> DataModule mapping), `optim`, `train`.
The model section is `MambaConfig` itself (mambadna/config.py), started from a preset by name
(`model.preset=small`).

Changing them (recipes, flags, `--set`) is mambadna/settings.py's, re-exported here; every change goes through
`from_dict`, which rebuilds the dataclasses, so each section's `__post_init__` checks the final values, whatever
their source. Defaults follow the Mamba paper's DNA recipe (AdamW β = (0.9, 0.95),
weight decay 0.1, cosine schedule with linear warmup, peak lr 8e-3).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mambadna.config import OBJECTIVES, POOLINGS, MambaConfig, check_chunk_bp, check_objective, setting, tiny
# the machinery that reads and changes these dataclasses, used as rc.apply_overrides(...), rc.load_recipe(...)
from mambadna.settings import (apply_overrides, apply_recipe, changed_settings, check_label_regex,  # noqa: F401
                               from_dict, leaf_settings, load_recipe, parse_value, read_recipe, save_config, to_dict,
                               transient_keys, type_name)
from mambadna.data.tables import is_table

# "auto": bf16 autocast on a GPU, fp32 on the CPU; "bf16" is "bf16-mixed"; the rest are Lightning's names
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "bf16-true", "bf16", "16-mixed")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "fsdp")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
SPLIT_MODES = ("auto", "contig", "block")
# Where a setting moved: the old key still works in recipes, --set and saved run_config.json files.
RENAMED = {f"train.{name}": f"runtime.{name}" for name in ("accelerator", "devices", "strategy", "precision",
                                                           "num_nodes")}
# the automatic length curriculum of long-window runs starts here (the Mamba paper's DNA warmup starts at 2^10): a
# fine-tune asked for 2^17 or 2^20 bases at once collapsed to one class (issue 19), one trained at 8 kb ran well at 1 Mb
AUTO_CURRICULUM_FROM_BP = 1024
VALIDATIONS_PER_RUN = 5  # train.val_every_n_steps none: validate this often, however long an epoch is
FINAL_MODELS = ("best", "last")  # finetune's final_model: the best validation's model or the last step's


def _check(section: str, obj, *names: str, allow_none: bool = False, minimum=None, strict: bool = True) -> None:
    """Finite numbers above `minimum` (0 by default, strictly)."""
    for name in names:
        value = getattr(obj, name)
        if value is None and allow_none:
            continue
        low = 0 if minimum is None else minimum
        ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
              and (value > low if strict else value >= low))
        if not ok:
            what = ("a positive number" if strict else "a non-negative number") if low == 0 else f"a number > {low}"
            raise ValueError(f"{section}.{name} must be {what}, got {value!r}")


@dataclass
class DataSpec:
    """Where sequences come from, and the DataModule that serves them (`datamodule`). Empty paths mean the bundled
    genomes (mambadna.data.bundled)."""

    genome: str = setting("", input=True, help="pretraining genome (evaluate: a language model's test genome): one FASTA, any "
                          "number of contigs; default: the bundled genomes", flag="--genome",
                          runs=("pretrain", "evaluate"))
    manifest: str = setting("", input=True, help="species manifest TSV (species, fasta[, split]) or a folder of FASTAs",
                            flag="--manifest", runs=("finetune", "evaluate"))
    train: str = setting("", input=True, help="labelled training sequences (CSV/TSV, parquet, a Hugging Face datasets folder, "
                         "or FASTA) instead of a manifest", flag="--train", runs=("finetune",))
    val: str = setting("", input=True, help="labelled validation sequences", flag="--val", runs=("finetune",))
    test: str = setting("", input=True, help="labelled test sequences (evaluate: a classifier's test file)", flag="--test",
                        runs=("finetune", "evaluate"))
    label_regex: str = setting("", help="regex with one group taking the label from FASTA headers",
                               flag="--label-regex", runs=("finetune", "evaluate"))
    label_key: str = setting("", help="header key holding the label (e.g. 'label' for label=...)",
                             runs=("finetune", "evaluate"))
    sequence_column: str = setting("sequence", help="column of a labelled table holding the sequence",
                                   runs=("finetune", "evaluate"))
    label_column: str = setting("label", help="column of a labelled table holding the label",
                                runs=("finetune", "evaluate"))
    window_bp: int = setting(1024, help="window length in bases", flag="--window-bp")
    batch_size: int = setting(8, help="sequences per batch per device", flag="--batch-size")
    num_workers: int = setting(0, help="DataLoader worker processes", flag="--num-workers")
    train_windows: int | None = setting(None, help="training windows per epoch (none: bases // window_bp)",
                                        runs=("pretrain", "finetune"))
    val_windows: int | None = setting(64, help="validation windows", runs=("pretrain", "finetune"))
    test_windows: int | None = setting(256, help="test windows")
    val_fraction: float = setting(0.1, help="fraction of every contig (or of the contigs) held out for validation")
    test_fraction: float = setting(0.1, help="fraction of every contig (or of the contigs) held out for testing")
    split_by: str = setting("auto", choices=SPLIT_MODES,
                            help="hold out whole contigs ('contig'), the end block of every contig ('block'), or "
                                 "'auto' (contigs when there are many); a manifest's split column overrides it")
    max_n_fraction: float = setting(0.1, help="windows with more N than this fraction are redrawn")
    reverse_complement: bool = setting(False, help="reverse-complement half of the training windows",
                                       runs=("pretrain", "finetune"))

    def __post_init__(self):
        _check("data", self, "window_bp", "batch_size")
        _check("data", self, "train_windows", "val_windows", "test_windows", allow_none=True)
        _check("data", self, "num_workers", strict=False)
        _check("data", self, "val_fraction", "test_fraction", "max_n_fraction", strict=False)
        for name in ("window_bp", "batch_size", "num_workers"):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"data.{name} must be an integer, got {getattr(self, name)!r}")
        if not self.val_fraction + self.test_fraction < 1:
            raise ValueError(f"data.val_fraction + data.test_fraction must be below 1, got {self.val_fraction} + "
                             f"{self.test_fraction}")
        if self.max_n_fraction > 1:
            raise ValueError(f"data.max_n_fraction must be in [0, 1], got {self.max_n_fraction}")
        if self.split_by not in SPLIT_MODES:
            raise ValueError(f"data.split_by must be one of {SPLIT_MODES}, got {self.split_by!r}")
        if self.manifest and (self.train or self.test):
            which = "data.train" if self.train else "data.test"
            raise ValueError(f"give data.manifest (species windows) or {which} (labelled sequences), not both")
        self._check_labelled()

    @property
    def labelled(self) -> str:
        """The labelled file a classifier trains on (data.train), or is tested on when there is none (evaluate)."""
        return self.train or self.test

    def _check_labelled(self) -> None:
        # settings that only apply to labelled files would otherwise be ignored without a word
        if self.label_regex and self.label_key:
            raise ValueError("give data.label_regex or data.label_key, not both")
        if self.label_regex:
            check_label_regex(self.label_regex)
        fasta = bool(self.labelled) and not is_table(self.labelled)
        if (self.label_regex or self.label_key) and self.labelled and not fasta:
            raise ValueError(f"data.label_regex / data.label_key read labels from FASTA headers; {self.labelled} is "
                             f"a table, whose labels are in the column data.label_column ({self.label_column!r})")
        if (self.label_regex or self.label_key) and self.manifest:
            raise ValueError("data.label_regex / data.label_key read labels from FASTA headers of data.train; a "
                             "manifest's labels are its species column")
        if fasta and not (self.label_regex or self.label_key):
            raise ValueError(f"data.train {self.labelled} is a FASTA: say where its labels are with data.label_key "
                             "(e.g. label for 'label=x' in the header) or data.label_regex (one group)")

    def genome_path(self, out_dir) -> str:
        """data.genome, or the bundled genomes as one FASTA written under `out_dir`."""
        from mambadna.data.bundled import default_pretrain_genome

        return self.genome or str(default_pretrain_genome(out_dir))

    def datamodule(self, task: str, tokenizer, out_dir, seed: int = 0, masking=None, tbptt: bool = False,
                   min_classes: int = 2):
        """The DataModule of these settings, the one place they become one. `task` "lm": windows of data.genome
        (contig streams with `tbptt`; `masking` a MaskingSpec tuple for masked-LM targets); "classify": labelled
        files (data.train / val / test) or species windows of data.manifest (default: the bundled genomes).
        A classifier's data needs `min_classes` classes (evaluate takes 1: a test set may hold some of them)."""
        from mambadna import data

        if task == "lm":
            genome = self.genome_path(out_dir)
            if tbptt:
                return data.StreamsDataModule(genome, window_bp=self.window_bp, batch_size=self.batch_size,
                                              num_workers=self.num_workers, seed=seed, tokenizer=tokenizer,
                                              val_fraction=self.val_fraction, test_fraction=self.test_fraction)
            return data.GenomeDataModule(
                genome, window_bp=self.window_bp, batch_size=self.batch_size, num_workers=self.num_workers, seed=seed,
                max_n_fraction=self.max_n_fraction, reverse_complement=self.reverse_complement,
                train_windows=self.train_windows, val_windows=self.val_windows, test_windows=self.test_windows,
                tokenizer=tokenizer, val_fraction=self.val_fraction, test_fraction=self.test_fraction,
                split_by=self.split_by, masking=masking)
        if task != "classify":
            raise ValueError(f"DataSpec.datamodule: task must be 'lm' or 'classify', got {task!r}")
        if self.labelled:
            datamodule = data.LabelledDataModule(
                self.labelled, self.val or None, self.test or None, batch_size=self.batch_size,
                num_workers=self.num_workers, seed=seed, sequence_column=self.sequence_column,
                label_column=self.label_column, label_regex=self.label_regex or None,
                label_key=self.label_key or None, tokenizer=tokenizer)
            datamodule.set_window(self.window_bp, self.batch_size)
            note = datamodule.truncation_note(self.window_bp)
            if note:  # the rest of those sequences is never seen: say so
                warnings.warn(note, data.DataWarning, stacklevel=2)
        else:
            from mambadna.data.bundled import default_species_manifest

            manifest = self.manifest or str(default_species_manifest(out_dir))
            datamodule = data.SpeciesDataModule(
                manifest, window_bp=self.window_bp, batch_size=self.batch_size, num_workers=self.num_workers,
                seed=seed, max_n_fraction=self.max_n_fraction, reverse_complement=self.reverse_complement,
                train_windows=self.train_windows, val_windows=self.val_windows, test_windows=self.test_windows,
                tokenizer=tokenizer, val_fraction=self.val_fraction, test_fraction=self.test_fraction,
                split_by=self.split_by, min_species=min_classes)
        if datamodule.num_classes < min_classes:
            raise ValueError(f"fine-tuning needs at least {min_classes} classes; the training data has "
                             f"{datamodule.num_classes}: {datamodule.class_names}")
        return datamodule


@dataclass
class OptimSpec:
    lr: float = setting(8e-3, help="peak learning rate", flag="--lr")
    betas: list[float] = setting(help="AdamW betas", factory=lambda: [0.9, 0.95])
    weight_decay: float = setting(0.1, help="AdamW weight decay (matrices only)")
    warmup_steps: int | None = setting(None, help="linear warmup steps (none: warmup_fraction of the run)")
    warmup_fraction: float = setting(0.1, help="warmup as a fraction of the run, when warmup_steps is none")
    min_lr_ratio: float = setting(0.1, help="the cosine schedule decays to lr * min_lr_ratio")
    grad_clip: float = setting(1.0, help="gradient-norm clipping (0: off)")
    lr_full_windows: int | None = setting(
        None, help="an optimizer step that sees fewer than N windows (a long window's step holds few, correlated "
                   "ones: a noisier gradient) trains at lr * sqrt(windows / N), stage by stage of the length "
                   "curriculum (none: the same lr at every window)")

    def __post_init__(self):
        _check("optim", self, "lr")
        _check("optim", self, "weight_decay", "grad_clip", strict=False)
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {self.betas!r}")
        _check("optim", self, "warmup_fraction", "min_lr_ratio", strict=False)
        if not self.warmup_fraction < 1 or self.min_lr_ratio > 1:
            raise ValueError("optim: need 0 <= warmup_fraction < 1 and 0 <= min_lr_ratio <= 1")
        if self.warmup_steps is not None and (isinstance(self.warmup_steps, bool) or self.warmup_steps < 0):
            raise ValueError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        _check("optim", self, "lr_full_windows", allow_none=True)


@dataclass
class TrainSpec:
    max_steps: int = setting(1000, help="optimizer steps", flag="--steps")
    accumulate_grad_batches: int = setting(1, help="gradient accumulation steps", flag="--accumulate")
    activation_checkpointing: bool = setting(False, help="recompute each Mamba block in the backward to save memory",
                                             flag="--activation-checkpointing")
    compile: bool = setting(False, help="torch.compile the loss computation", flag="--compile")
    ckpt_every_n_steps: int = setting(500, help="save a checkpoint every N steps (also at each epoch end, on "
                                               "SIGTERM/SIGINT and at the end)", flag="--ckpt-every")
    keep_checkpoints: int = setting(2, help="keep the newest N step checkpoints (2 or more keeps a good one "
                                            "behind a NaN)")
    val_every_n_steps: int | None = setting(
        None, flag="--val-every",
        help=f"validate every N optimizer steps, whatever the epoch length, and keep the model of the lowest "
             f"val/loss in model_best/ (none: max_steps // {VALIDATIONS_PER_RUN}, so a run validates "
             f"{VALIDATIONS_PER_RUN} times)")
    log_every_n_steps: int = setting(10, help="log metrics every N steps")
    seed: int = setting(0, help="random seed", flag="--seed")
    progress_bar: bool = setting(True, help="report progress while training: a bar on a terminal, a line every "
                                            "train.progress_every_s seconds in a log", flag="--no-progress",
                                 flag_help="hide the progress report of training (neither a bar nor log lines)")
    progress_every_s: float = setting(30.0, help="when the output is not a terminal, print a progress line (step, "
                                                 "loss, bases/s, ETA) every N seconds")
    seqlen_warmup_from_bp: int | None = setting(
        None, help="length curriculum (Mamba paper's sequence-length warmup): start at windows of this many bases "
                   "and double them up to data.window_bp, the batch scaled so bases per step stay those of the "
                   "final stage, every stage training on the same number of bases (stages sized in steps). "
                   "none: automatic, from 1024 bp when data.window_bp is 8192 or more; 0: off")
    seqlen_warmup_first_fraction: float | None = setting(
        None, help="share of the steps trained at the curriculum's first (shortest) window, the rest split over the "
                   "longer ones at equal bases (none: 0.9 for a classifier, whose labelled windows are plentiful "
                   "there and which runs at longer windows than it was trained on; every stage an equal share of the "
                   "bases for pretraining)")
    min_windows_per_step: int | None = setting(
        None, help="gradient accumulation is raised so that an optimizer step sees at least this many windows "
                   "(none: a classifier's number of classes, so a step at a long window still sees every class "
                   "once on average; 1 for pretraining)")
    init_memory_bp: int | None = setting(
        None, runs=("pretrain",),
        help="pretraining from scratch: the bases the initial step sizes reach (model.dt_min lowered to 1/N where "
             "that is below it, dt_init_floor to a tenth of that). none: a tenth of data.window_bp, so windows of "
             "10 kb and more (at 2^20 on human chrX: 0.011 bits/base lower); 0: off, model.dt_min as set")
    chunk_bp: int | None = setting(
        None, flag="--chunk-bp",
        help="run each sequence through all layers in chunks of this many bases, carrying conv and SSM state and "
             "recomputing each chunk in the backward: exact, peak memory grows with the chunk, not the window")
    tbptt: bool = setting(
        False, flag="--tbptt", runs=("pretrain",),
        help="pretraining: truncated BPTT over whole contigs in consecutive windows of data.window_bp, the state "
             "carried forward without gradient; data.batch_size is the number of parallel streams and an epoch one "
             "pass over the split (data.train_windows / val_windows do not apply)")

    def __post_init__(self):
        _check("train", self, "max_steps", "accumulate_grad_batches", "ckpt_every_n_steps", "log_every_n_steps",
               "keep_checkpoints")
        _check("train", self, "val_every_n_steps", "chunk_bp", "min_windows_per_step", allow_none=True)
        _check("train", self, "init_memory_bp", strict=False, allow_none=True)
        _check("train", self, "progress_every_s")
        _check("train", self, "seqlen_warmup_from_bp", strict=False, allow_none=True)
        if self.seqlen_warmup_first_fraction is not None and not 0 <= self.seqlen_warmup_first_fraction < 1:
            raise ValueError(f"train.seqlen_warmup_first_fraction must be in [0, 1), got "
                             f"{self.seqlen_warmup_first_fraction!r}")
        self._check_long_context()

    def _check_long_context(self) -> None:
        # chunk_bp already recomputes each chunk; the per-block wrapper and TBPTT's carried state would make a
        # combination do nothing useful or nothing at all
        if self.activation_checkpointing and self.chunk_bp:
            raise ValueError("--activation-checkpointing (train.activation_checkpointing) and --chunk-bp "
                             "(train.chunk_bp) are mutually exclusive: chunk_bp already recomputes each chunk in "
                             "the backward; use one of them")
        if self.activation_checkpointing and self.tbptt:
            raise ValueError("--activation-checkpointing (train.activation_checkpointing) does not apply with --tbptt "
                             "(train.tbptt): its windows run with carried state; use --chunk-bp to save memory")
        if self.compile and (self.chunk_bp or self.tbptt):
            raise ValueError("train.compile only compiles the plain forward; it does not apply with train.chunk_bp "
                             "or train.tbptt")
        if self.tbptt and self.seqlen_warmup_from_bp:
            raise ValueError("train.seqlen_warmup_from_bp does not apply with train.tbptt: the window stays "
                             "data.window_bp and the carried state supplies the longer context")

    def curriculum_start(self, window_bp: int) -> int:
        """The window the length curriculum starts at for a run of `window_bp` windows (0: no curriculum)."""
        if self.seqlen_warmup_from_bp is not None:
            if self.seqlen_warmup_from_bp > window_bp:
                raise ValueError(f"train.seqlen_warmup_from_bp ({self.seqlen_warmup_from_bp}) is longer than "
                                 f"data.window_bp ({window_bp}); the curriculum grows windows up to data.window_bp")
            return self.seqlen_warmup_from_bp
        from mambadna.data.datamodules import LONG_WINDOW_BP  # Lightning: imported only once a run starts

        return AUTO_CURRICULUM_FROM_BP if window_bp >= LONG_WINDOW_BP and not self.tbptt else 0

    def val_interval_steps(self) -> int:
        """Optimizer steps between validations: val_every_n_steps, or max_steps // VALIDATIONS_PER_RUN."""
        return self.val_every_n_steps or max(1, self.max_steps // VALIDATIONS_PER_RUN)


@dataclass
class RuntimeSpec:
    """Where a command runs: the same settings, and flags, for every command that runs a model."""

    accelerator: str = setting("auto", help="where to run: auto (the GPU when there is one), cpu or gpu",
                               flag="--accelerator", choices=ACCELERATORS)
    devices: str = setting("auto", help="devices: auto, a count (2: two GPUs, or two CPU processes with "
                           "--accelerator cpu) or a list of GPU indices (0,1)", flag="--devices")
    strategy: str = setting("auto", help="Lightning strategy over several devices", flag="--strategy",
                            choices=STRATEGIES, runs=("pretrain", "finetune"))
    precision: str = setting("32-true", help="precision: auto (bf16 autocast on a GPU, fp32 on the CPU), 32-true, "
                             "bf16-mixed, ... (Lightning's names)", flag="--precision", choices=PRECISIONS,
                             runs=("pretrain", "finetune", "evaluate", "embed"))
    num_nodes: int = setting(1, help="machines (Lightning num_nodes)", runs=("pretrain", "finetune"))

    def __post_init__(self):
        _check("runtime", self, "num_nodes")
        if self.precision not in PRECISIONS:
            raise ValueError(f"runtime.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"runtime.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"runtime.accelerator must be one of {ACCELERATORS}, got {self.accelerator!r}")
        self.lightning_devices()

    def lightning_devices(self):
        text = str(self.devices).strip()
        if text == "auto":
            return "auto"
        try:
            if "," in text:
                devices = [int(x) for x in text.split(",") if x.strip()]
                if devices and all(d >= 0 for d in devices):
                    return devices
            elif int(text) >= 1:
                return int(text)
        except ValueError:
            pass
        raise ValueError(f"runtime.devices must be 'auto', a count >= 1 or a list like '0,1', got {text!r}")

    def device_count(self) -> int:
        """How many processes a command that deals work out itself (embed) starts: 1 for 'auto'."""
        devices = self.lightning_devices()
        return len(devices) if isinstance(devices, list) else 1 if devices == "auto" else devices

    def lightning_precision(self, cuda: bool) -> str:
        """The precision as Lightning takes it: 'auto' is bf16-mixed on a GPU, fp32 elsewhere."""
        if self.precision == "auto":
            return "bf16-mixed" if cuda else "32-true"
        return "bf16-mixed" if self.precision == "bf16" else self.precision


@dataclass
class MaskingSpec:
    """Masked-LM corruption (BERT's 80/10/10, as Caduceus pretrains; mambadna/data/masking.py)."""

    rate: float = setting(0.15, flag="--mask-rate", help="--objective mlm: fraction of bases chosen to be predicted")
    mask_fraction: float = setting(0.8, help="of the chosen bases, the fraction replaced by [MASK]")
    random_fraction: float = setting(0.1, help="of the chosen bases, the fraction replaced by a random base (the "
                                               "rest stay as they are)")

    def __post_init__(self):
        _check("masking", self, "rate")
        _check("masking", self, "mask_fraction", "random_fraction", strict=False)
        if self.rate > 1 or self.mask_fraction + self.random_fraction > 1:
            raise ValueError(f"masking: need rate <= 1 and mask_fraction + random_fraction <= 1, got rate "
                             f"{self.rate}, {self.mask_fraction} + {self.random_fraction}")

    def as_tuple(self) -> tuple[float, float, float]:
        return self.rate, self.mask_fraction, self.random_fraction


@dataclass
class RunFolderSettings:
    """What pretrain and finetune share about their run folder (`out_dir` is each command's own, with its default):
    continuing a run, or replacing one."""
    out_dir: str = setting("runs/run", help="run folder", flag="--out")  # each command names its own default
    resume: bool = setting(False, flag="--resume", transient=True,
                           help="continue the run in --out from its newest checkpoint, with its saved settings (flags "
                                "given change them; the model shape cannot change)")
    resume_from: str = setting("", flag="--resume-from", metavar="CKPT", transient=True,
                               help="continue from this checkpoint file (of --out's run, or of another run into a new "
                                    "--out)")
    overwrite: str | None = setting(None, flag="--overwrite", const="move", choices=("move", "delete"),
                                    metavar="move|delete", transient=True,
                                    help="start afresh where --out already holds a run: move the old run aside to "
                                         "<out>.old-N (default) or delete the files a run writes")

    RENAMED: ClassVar[dict] = RENAMED


@dataclass
class PretrainConfig(RunFolderSettings):
    out_dir: str = setting("runs/pretrain", help="run folder: checkpoints, logs, plots and the final model",
                           flag="--out")
    model: MambaConfig = setting(help="model shape (start from a preset with model.preset)", factory=tiny)
    data: DataSpec = setting(help="data", factory=DataSpec)
    optim: OptimSpec = setting(help="optimizer", factory=OptimSpec)
    train: TrainSpec = setting(help="training", factory=TrainSpec)
    objective: str = setting("clm", choices=OBJECTIVES,
                             help="clm: predict the next base (causal models); mlm: predict masked bases (the "
                                  "objective of bidirectional and rc_equivariant models)")
    masking: MaskingSpec = setting(help="masked-LM corruption (--objective mlm)", factory=MaskingSpec)
    runtime: RuntimeSpec = setting(help="where the run goes", factory=RuntimeSpec)

    def __post_init__(self):
        check_objective(self.model, self.objective)
        if self.train.tbptt and (self.objective != "clm" or not self.model.causal):
            raise ValueError("train.tbptt carries the state left to right from window to window: it needs a causal "
                             "model and --objective clm")
        if self.train.chunk_bp is not None:
            check_chunk_bp(self.train.chunk_bp, self.model)


@dataclass
class FinetuneConfig(RunFolderSettings):
    out_dir: str = setting("runs/finetune", help="run folder: checkpoints, logs, plots and the final model",
                           flag="--out")
    pretrained: str = setting("", flag="--pretrained",
                              help="MambaLM to start from: save_pretrained folder, transformers Mamba folder or Hub "
                                   "id (default: train from scratch)")
    pooling: str = setting("mean", flag="--pooling", choices=POOLINGS,
                           help="how positions are pooled for the head (mean: every position counts, so the model "
                                "runs at any window, longer ones too; last: the final state only)")
    freeze_backbone: bool = setting(False, help="train only the classification head", flag="--freeze-backbone")
    final_model: str = setting("best", flag="--final-model", choices=FINAL_MODELS,
                               help="the model the run tests and saves as model/: best (the validation with the "
                                    "lowest val/loss; a length curriculum also validates where its first window's "
                                    "stage ends, so a long window keeps the shorter training when that classifies "
                                    "the run's window better) or last (the last step's)")
    segment_bp: int | None = setting(None, flag="--segment-bp", help="with mean pooling, training windows longer "
                                     "than this are also classified stretch by stretch (each stretch's loss added), "
                                     "so one long window is many labelled examples")
    model: MambaConfig = setting(help="model shape for a run from scratch (a fine-tune takes the checkpoint's)",
                                 factory=tiny)
    data: DataSpec = setting(help="data", factory=lambda: DataSpec(window_bp=256, batch_size=16))
    optim: OptimSpec = setting(help="optimizer", factory=lambda: OptimSpec(lr=1e-3, weight_decay=0.01))
    train: TrainSpec = setting(help="training", factory=lambda: TrainSpec(max_steps=500))
    runtime: RuntimeSpec = setting(help="where the run goes", factory=RuntimeSpec)

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.final_model not in FINAL_MODELS:
            raise ValueError(f"final_model (--final-model) must be best or last, got {self.final_model!r}")
        if (self.data.val or self.data.test) and not self.data.train:
            raise ValueError("data.val / data.test (--val / --test) are labelled files that go with data.train "
                             "(--train); a manifest's held-out windows come from data.val_fraction / test_fraction")
        if self.train.tbptt:
            raise ValueError("train.tbptt applies to pretraining only")
        if self.segment_bp is not None and (self.segment_bp < 1 or self.pooling != "mean"):
            raise ValueError(f"segment_bp (--segment-bp) must be a positive number of bases, with pooling=mean (each "
                             f"stretch is classified by its mean); got {self.segment_bp!r}, pooling={self.pooling!r}")
        if self.train.chunk_bp is not None and not self.pretrained:  # a checkpoint's model is checked by the task
            check_chunk_bp(self.train.chunk_bp, self.model)


def load_config(path: str | Path):
    """The config a run saved (`run_config.json`), as its dataclass; a damaged file is a one-line ValueError."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        kind = data.pop("kind")
    except (OSError, ValueError, KeyError, AttributeError) as err:
        raise ValueError(f"{path} is not a readable run config ({err}); start afresh with --overwrite") from None
    classes = {c.__name__: c for c in (PretrainConfig, FinetuneConfig)}
    if kind not in classes:
        raise ValueError(f"{path} holds a {kind!r} config, not a pretrain or finetune run")
    try:
        return from_dict(classes[kind], data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
