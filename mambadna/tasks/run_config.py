"""Run configurations: nested dataclasses, changed by a recipe file (JSON/TOML) or `--set key=value` overrides.

Every change goes through `from_dict`, which rebuilds the dataclasses, so each section's `__post_init__` checks the
final values, whatever their source. Defaults follow the Mamba paper's DNA recipe (AdamW β = (0.9, 0.95),
weight decay 0.1, cosine schedule with linear warmup, peak lr 8e-3); presets are small functions at the end.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from mambadna.config import MambaConfig
from mambadna.tokenizer import tokenizer_from_name

PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true", "16-mixed")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "fsdp")
POOLINGS = ("last", "mean", "cls")


def _positive(section: str, obj, *names: str, allow_none: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None and allow_none:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{section}.{name} must be a positive number, got {value!r}")


@dataclass
class ModelSpec:
    """Model shape for a run from scratch (a fine-tune from a checkpoint takes the checkpoint's shape)."""

    d_model: int = 64
    n_layer: int = 2
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    tokenizer: str = "nucleotide"

    def __post_init__(self):
        _positive("model", self, "d_model", "n_layer", "d_state", "d_conv", "expand")
        tokenizer_from_name(self.tokenizer)

    def mamba_config(self) -> MambaConfig:
        vocab = tokenizer_from_name(self.tokenizer).vocab_size  # already padded to a multiple of 8
        return MambaConfig(d_model=self.d_model, n_layer=self.n_layer, d_state=self.d_state, d_conv=self.d_conv,
                           expand=self.expand, vocab_size=vocab, tokenizer=self.tokenizer)


@dataclass
class DataSpec:
    """Where sequences come from. Empty paths mean the bundled genomes (see mambadna.data.bundled_genomes)."""

    genome: str = ""  # pretrain: one FASTA (any number of contigs)
    manifest: str = ""  # finetune: species manifest TSV or folder of FASTAs
    train: str = ""  # finetune: labelled table/FASTA (instead of a manifest)
    val: str = ""
    test: str = ""
    label_regex: str = ""
    label_key: str = ""
    sequence_column: str = "sequence"
    label_column: str = "label"
    window_bp: int = 1024
    batch_size: int = 8
    num_workers: int = 0
    train_windows: int | None = None  # windows per epoch (None: bases // window_bp)
    val_windows: int | None = 64
    test_windows: int | None = 256
    max_n_fraction: float = 0.1
    reverse_complement: bool = False

    def __post_init__(self):
        _positive("data", self, "window_bp", "batch_size")
        _positive("data", self, "train_windows", "val_windows", "test_windows", allow_none=True)
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.manifest and self.train:
            raise ValueError("give data.manifest (species windows) or data.train (labelled sequences), not both")


@dataclass
class OptimSpec:
    lr: float = 8e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.1
    warmup_steps: int | None = None  # None: warmup_fraction of the run
    warmup_fraction: float = 0.1
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0

    def __post_init__(self):
        _positive("optim", self, "lr")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.weight_decay < 0 or not 0 <= self.warmup_fraction < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("optim: need weight_decay >= 0, 0 <= warmup_fraction < 1, 0 <= min_lr_ratio <= 1")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")


@dataclass
class TrainSpec:
    max_steps: int = 1000
    precision: str = "32-true"
    accumulate_grad_batches: int = 1
    activation_checkpointing: bool = False
    compile: bool = False
    accelerator: str = "auto"
    devices: str = "auto"  # "auto", a count ("2") or a list ("0,1"), as Lightning takes it
    strategy: str = "auto"
    num_nodes: int = 1
    ckpt_every_n_steps: int = 500
    val_every_n_steps: int | None = None  # None: validate at the end of each epoch
    log_every_n_steps: int = 10
    seed: int = 0
    progress_bar: bool = True
    # Sequence-length warmup (Mamba paper): start at seqlen_warmup_from_bp, double each stage up to
    # data.window_bp, halving the batch so tokens per step stay constant. 0 turns it off.
    seqlen_warmup_from_bp: int = 0
    epochs_per_stage: int = 1
    # Long contexts (pretraining only; see mambadna/long_context.py and mambadna/tbptt.py). chunk_bp runs each
    # sequence through all layers in chunks of this many bases, recomputing each chunk in the backward: exact, with
    # peak memory growing with the chunk. tbptt trains over whole contigs in consecutive windows of data.window_bp,
    # carrying the state forward without gradient; an epoch is then one pass over the split (every stream to its
    # end, validation likewise over the whole val split), so data.train_windows / data.val_windows do not apply.
    chunk_bp: int | None = None
    tbptt: bool = False

    def __post_init__(self):
        _positive("train", self, "max_steps", "accumulate_grad_batches", "ckpt_every_n_steps", "log_every_n_steps",
                  "epochs_per_stage", "num_nodes")
        _positive("train", self, "val_every_n_steps", allow_none=True)
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"train.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.seqlen_warmup_from_bp < 0:
            raise ValueError(f"train.seqlen_warmup_from_bp must be >= 0, got {self.seqlen_warmup_from_bp}")
        _positive("train", self, "chunk_bp", allow_none=True)
        self._check_long_context()

    def _check_long_context(self) -> None:
        # the per-block checkpoint wrapper and torch.compile act on the plain forward only; chunked and TBPTT
        # steps run the layers with carried state, so either combination would silently do nothing
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

    def lightning_devices(self):
        text = str(self.devices).strip()
        if text == "auto":
            return "auto"
        if "," in text:
            return [int(x) for x in text.split(",") if x.strip()]
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"train.devices must be 'auto', a count or a list like '0,1', got {text!r}") from None


@dataclass
class PretrainConfig:
    out_dir: str = "runs/pretrain"
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    train: TrainSpec = field(default_factory=TrainSpec)


@dataclass
class FinetuneConfig:
    out_dir: str = "runs/finetune"
    pretrained: str = ""  # a save_pretrained MambaLM directory; empty: train from scratch with `model`
    pooling: str = "last"
    freeze_backbone: bool = False
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=lambda: DataSpec(window_bp=256, batch_size=16))
    optim: OptimSpec = field(default_factory=lambda: OptimSpec(lr=1e-3, weight_decay=0.01))
    train: TrainSpec = field(default_factory=lambda: TrainSpec(max_steps=500))

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.train.chunk_bp or self.train.tbptt:
            raise ValueError("train.chunk_bp and train.tbptt apply to pretraining only")


# ---- dict <-> dataclass, recipes and --set overrides ----

def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _field_types(cls) -> dict:
    return typing.get_type_hints(cls)


def from_dict(cls, data: dict, where: str = ""):
    """Build `cls` from a nested dict; an unknown key raises ValueError listing the valid ones."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or cls.__name__}: expected a table of settings, got {data!r}")
    hints = _field_types(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        if key not in hints:
            raise ValueError(f"unknown setting {name!r}; valid keys{' in ' + where if where else ''}: "
                             f"{', '.join(valid)}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = from_dict(kind, value, name)
        else:
            kwargs[key] = _check_type(name, kind, value)
    return cls(**kwargs)


def _check_type(name: str, kind, value):
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union \
        else (kind,)
    if value is None and type(None) in options:
        return None
    for option in options:
        base = typing.get_origin(option) or option
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base in (bool, str) and isinstance(value, base):
            return value
        if base is list and isinstance(value, (list, tuple)):
            return list(value)
    raise ValueError(f"setting {name!r} must be {_type_name(kind)}, got {value!r}")


def _type_name(kind) -> str:
    return str(kind).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _parse_value(name: str, kind, text: str):
    """Text of a --set value -> a value of the field's type ('none' for optional fields; JSON for lists)."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if text.lower() in ("none", "null") and type(None) in options:
        return None
    for option in options:
        base = typing.get_origin(option) or option
        try:
            if base is bool:
                if text.lower() in ("true", "1", "yes", "on"):
                    return True
                if text.lower() in ("false", "0", "no", "off"):
                    return False
                continue
            if base is int:
                return int(text)
            if base is float:
                return float(text)
            if base is list:
                return json.loads(text if text.startswith("[") else f"[{text}]")
            if base is str:
                return text
        except ValueError:
            continue
    raise ValueError(f"--set {name}={text!r}: not a valid {_type_name(kind)}")


def apply_overrides(cfg, assignments: list[str]):
    """`["train.max_steps=10", "data.window_bp=512"]` -> a new, validated config."""
    data = to_dict(cfg)
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        cls, node = type(cfg), data
        for depth, part in enumerate(parts):
            hints = _field_types(cls)
            where = ".".join(parts[:depth]) or "the run config"
            if part not in hints:
                valid = ", ".join(f.name for f in dataclasses.fields(cls))
                raise ValueError(f"unknown setting {key.strip()!r}: {part!r} is not in {where}; valid keys: {valid}")
            kind = hints[part]
            if depth == len(parts) - 1:
                if dataclasses.is_dataclass(kind):
                    raise ValueError(f"{key.strip()!r} is a section; set one of its keys, e.g. {key.strip()}."
                                     f"{dataclasses.fields(kind)[0].name}=...")
                node[part] = _parse_value(key.strip(), kind, text.strip())
            elif not dataclasses.is_dataclass(kind):
                raise ValueError(f"unknown setting {key.strip()!r}: {'.'.join(parts[:depth + 1])} is not a section")
            else:
                cls, node = kind, node[part]
    return from_dict(type(cfg), data)


def load_recipe(cfg, path: str | Path):
    """Apply a recipe file (TOML or JSON, nested tables as in the config) on top of `cfg`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"recipe {path} not found")
    try:
        if path.suffix.lower() == ".toml":
            recipe = tomllib.loads(path.read_text())
        else:
            recipe = json.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"recipe {path} does not parse: {err}") from None
    data = to_dict(cfg)
    _merge(data, recipe)
    try:
        return from_dict(type(cfg), data)
    except ValueError as err:
        raise ValueError(f"recipe {path}: {err}") from None


def _merge(base: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def save_config(cfg, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"kind": type(cfg).__name__, **to_dict(cfg)}, indent=2) + "\n")


# ---- presets ----

def demo_pretrain(out_dir: str) -> PretrainConfig:
    """Seconds-scale pretraining of a tiny model on the bundled genomes (the laptop demo)."""
    return PretrainConfig(
        out_dir=out_dir,
        model=ModelSpec(d_model=32, n_layer=2, d_state=8),
        data=DataSpec(window_bp=256, batch_size=16, val_windows=32),
        optim=OptimSpec(lr=8e-3),
        train=TrainSpec(max_steps=300, ckpt_every_n_steps=300, log_every_n_steps=10),
    )


def demo_finetune(out_dir: str, pretrained: str) -> FinetuneConfig:
    return FinetuneConfig(
        out_dir=out_dir, pretrained=pretrained, pooling="mean",
        data=DataSpec(window_bp=128, batch_size=32, val_windows=64, test_windows=256),
        optim=OptimSpec(lr=1e-2, weight_decay=0.01),
        train=TrainSpec(max_steps=300, ckpt_every_n_steps=300, log_every_n_steps=10),
    )
