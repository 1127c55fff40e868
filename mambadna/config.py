"""MambaConfig: the hyper-parameters of a Mamba language model, validated once at construction."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from mambadna.kernels.choice import CONV_BACKENDS, NORM_BACKENDS, SCAN_KERNELS, V2_MAX_STATES
from mambadna.tokenizer import tokenizer_from_name


def setting(default=dataclasses.MISSING, *, help: str, flag: str | None = None, choices=None, factory=None,
            runs: tuple[str, ...] | None = None, **cli):
    """A dataclass field with its help text: the one place a setting is described (the CLI's flags and help are
    built from these, see mambadna/cli.py); `flag` names a short alias (e.g. "--steps" for train.max_steps) and
    `runs` the commands it applies to (default: all that have it). `cli` holds how the command line shows it:
    `positional=True` (an argument, not a flag), `flag_help` (what a bool flag does, when it turns the setting
    off), `const` (the value of a flag given without one), `metavar`, `input=True` for a file or folder that
    must exist (checked with the arguments), and `transient=True` for a setting of one invocation (--resume,
    --overwrite) that a run's saved run_config.json does not keep."""
    meta = {"help": help, "flag": flag, "choices": choices, **cli}
    if runs is not None:
        meta["runs"] = runs
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


SCAN_BACKENDS = (None, "ref", "chunked", "triton")
# How a classifier or `embed` turns per-position hidden states into one vector (see mambadna.model.pool).
POOLINGS = ("last", "mean", "cls")


@dataclass
class MambaConfig:
    """Sizes follow the Mamba paper / mamba_ssm: d_inner = expand * d_model, dt_rank = ceil(d_model / 16)."""

    d_model: int = setting(help="residual width")
    n_layer: int = setting(help="number of Mamba blocks")
    vocab_size: int = setting(16, help="vocabulary size (the nucleotide tokenizer's 16; 264 for byte)")
    d_state: int = setting(16, help="SSM state size per channel (n)")
    d_conv: int = setting(4, help="causal depthwise convolution width")
    expand: int = setting(2, help="d_inner = expand * d_model, the width the scan runs at")
    dt_rank: int | str = setting("auto", help="rank of the delta projection ('auto': ceil(d_model / 16))")
    dt_min: float = setting(1e-3, help="smallest initial step size delta")
    dt_max: float = setting(1e-1, help="largest initial step size delta")
    dt_init_floor: float = setting(1e-4, help="floor of the initial delta")
    conv_bias: bool = setting(True, help="bias in the depthwise convolution")
    bias: bool = setting(False, help="biases in the in/out projections")
    tie_embeddings: bool = setting(True, help="LM head shares the embedding matrix")
    pad_vocab_multiple: int = setting(8, help="vocab_size must be a multiple of this")
    norm_eps: float = setting(1e-5, help="RMSNorm epsilon")
    residual_in_fp32: bool = setting(True, help="keep the residual stream in fp32 under mixed precision")
    tokenizer: str = setting("nucleotide", help="tokenizer: nucleotide (A C G T N) or byte")
    scan_backend: str | None = setting(None, help="selective scan: none (auto), ref, chunked or triton")
    scan_kernel: str = setting(
        "auto", choices=SCAN_KERNELS,
        help="the GPU (triton) scan kernel: auto (the faster one measured for the shape, see "
             "experiments/BENCHMARKS.md), v1 (chunk-parallel) or v2 (state in registers, d_state <= 16); the "
             "results are the same up to rounding")
    conv_backend: str = setting(
        "auto", choices=CONV_BACKENDS,
        help="the causal depthwise conv: auto (triton on CUDA tensors where it loads, else torch; with norm_backend "
             "auto the 3.5M model trains 1.2-1.3x faster on an H100, experiments/BENCHMARKS.md), torch (nn.Conv1d, "
             "then SiLU) or triton (one Triton kernel with the bias and SiLU fused, mambadna/kernels/conv_triton.py); "
             "the results are the same up to rounding")
    norm_backend: str = setting(
        "auto", choices=NORM_BACKENDS,
        help="the RMSNorm: auto (triton on CUDA when it loads, else torch), torch (eager) or triton (one fused kernel "
             "each way, mambadna/kernels/norm_triton.py); the results are the same up to rounding")
    bidirectional: bool = setting(
        False, flag="--bidirectional",
        help="BiMamba (Caduceus): every block also runs a mixer over each sequence reversed and adds the two "
             "directions; the model sees both sides of every base, so it trains with --objective mlm")
    bidirectional_weight_tie: bool = setting(
        True, help="with bidirectional: the reverse mixer shares the in/out projections of the forward one "
                   "(Caduceus's default; most of a mixer's parameters), keeping its own conv, x/dt projections, A "
                   "and D")
    rc_equivariant: bool = setting(
        False, flag="--rc-equivariant",
        help="reverse-complement equivariance (Caduceus RCPS): both strands through shared weights, so outputs for "
             "the reverse complement are exactly the reverse complement of the outputs and the classifier is "
             "RC-invariant; twice the compute, same parameters; nucleotide tokenizer only; trains with "
             "--objective mlm")

    def __post_init__(self):
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand", "pad_vocab_multiple"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MambaConfig.{name} must be a positive int, got {value!r}")
        if self.dt_rank != "auto" and (
            isinstance(self.dt_rank, bool) or not isinstance(self.dt_rank, int) or self.dt_rank < 1
        ):
            raise ValueError(f"MambaConfig.dt_rank must be 'auto' or a positive int, got {self.dt_rank!r}")
        for name in ("dt_min", "dt_max", "dt_init_floor", "norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"MambaConfig.{name} must be a positive number, got {value!r}")
        if not self.dt_min < self.dt_max:
            raise ValueError(f"MambaConfig.dt_min ({self.dt_min}) must be smaller than dt_max ({self.dt_max})")
        if self.vocab_size % self.pad_vocab_multiple:
            raise ValueError(
                f"MambaConfig.vocab_size ({self.vocab_size}) must be a multiple of pad_vocab_multiple "
                f"({self.pad_vocab_multiple}); use {math.ceil(self.vocab_size / self.pad_vocab_multiple) * self.pad_vocab_multiple}"
            )
        for name in ("conv_bias", "bias", "tie_embeddings", "residual_in_fp32"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"MambaConfig.{name} must be a bool, got {getattr(self, name)!r}")
        tokenizer = tokenizer_from_name(self.tokenizer)
        if self.vocab_size < tokenizer.vocab_size:
            raise ValueError(
                f"MambaConfig.vocab_size ({self.vocab_size}) is smaller than the {self.tokenizer!r} tokenizer's "
                f"vocabulary ({tokenizer.vocab_size}); pass vocab_size={tokenizer.vocab_size}"
            )
        if self.scan_backend not in SCAN_BACKENDS:
            raise ValueError(f"MambaConfig.scan_backend must be one of {SCAN_BACKENDS}, got {self.scan_backend!r}")
        for name, choices in (("scan_kernel", SCAN_KERNELS), ("conv_backend", CONV_BACKENDS),
                              ("norm_backend", NORM_BACKENDS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"MambaConfig.{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.scan_kernel == "v2" and self.d_state > V2_MAX_STATES:
            raise ValueError(f"MambaConfig.scan_kernel v2 keeps at most {V2_MAX_STATES} states per channel in "
                             f"registers; d_state is {self.d_state}: use scan_kernel v1 or auto")
        for name in ("bidirectional", "bidirectional_weight_tie", "rc_equivariant"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"MambaConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if not self.bidirectional_weight_tie and not self.bidirectional:
            raise ValueError("MambaConfig.bidirectional_weight_tie=False only applies with bidirectional=True (it "
                             "unties the reverse mixer's projections)")
        if self.rc_equivariant and self.tokenizer != "nucleotide":
            raise ValueError(f"MambaConfig.rc_equivariant needs the nucleotide tokenizer (it complements A<->T, "
                             f"C<->G); got tokenizer {self.tokenizer!r}")

    @property
    def causal(self) -> bool:
        """Whether position t sees only positions <= t: true unless bidirectional or rc_equivariant (the reverse
        strand is read from the other end). Only a causal model predicts the next base, generates, or runs in
        chunks carrying state."""
        return not (self.bidirectional or self.rc_equivariant)

    @property
    def kind(self) -> str:
        """A short name for messages: causal, bidirectional, rc_equivariant or bidirectional+rc_equivariant."""
        names = [n for n in ("bidirectional", "rc_equivariant") if getattr(self, n)]
        return "+".join(names) or "causal"

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def dt_rank_resolved(self) -> int:
        return math.ceil(self.d_model / 16) if self.dt_rank == "auto" else self.dt_rank

    def with_memory(self, bases: float) -> "MambaConfig":
        """This config with its initial Δ reaching down to 1 / `bases` (dt_init_floor a tenth of that), so the
        scan's slowest channels (A = -1, decay exp(-Δ) a position) start out holding `bases` positions; itself
        where dt_min already reaches that far. Only the initialisation of a new model differs."""
        dt_min = 1.0 / bases
        if dt_min >= self.dt_min:
            return self
        return dataclasses.replace(self, dt_min=dt_min, dt_init_floor=min(self.dt_init_floor, dt_min / 10))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MambaConfig":
        """From saved or user settings; `"preset": name` starts from that preset, the other keys override it."""
        d = dict(d)
        preset = d.pop("preset", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown MambaConfig keys: {unknown}; known keys are {sorted(known)} and 'preset'")
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f"unknown model preset {preset!r}; presets are {', '.join(PRESETS)}")
            return PRESETS[preset](**d)
        missing = [name for name in ("d_model", "n_layer") if name not in d]
        if missing:
            raise ValueError(f"MambaConfig.from_dict is missing required keys: {missing} (or give a 'preset')")
        return cls(**d)


def tiny(**overrides) -> MambaConfig:
    """d_model 64, 2 layers (~0.1M parameters): seconds-scale CPU demos and tests."""
    return MambaConfig(**{"d_model": 64, "n_layer": 2, **overrides})


def small(**overrides) -> MambaConfig:
    """d_model 128, 6 layers: the size of the Mamba paper's ~1.4M-parameter long-context DNA model."""
    return MambaConfig(**{"d_model": 128, "n_layer": 6, **overrides})


def base(**overrides) -> MambaConfig:
    """d_model 256, 8 layers (~3.5M parameters)."""
    return MambaConfig(**{"d_model": 256, "n_layer": 8, **overrides})


PRESETS = {"tiny": tiny, "small": small, "base": base}


# The training objectives of a language model (mambadna/objective.py): causal (next-base) and masked modelling.
OBJECTIVES = ("clm", "mlm")


def check_objective(config: MambaConfig, objective: str) -> None:
    """Refuse an objective the model cannot learn: next-base prediction is trivial for a model that sees the base."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if objective == "clm" and not config.causal:
        raise ValueError(f"next-base prediction (--objective clm) needs a causal model: a {config.kind} model sees "
                         "the base it would be asked to predict; pretrain it with --objective mlm")


def check_chunk_bp(chunk_bp, config: MambaConfig | None = None) -> None:
    """A positive int, and (given the model's config) a causal model: see `NOT_CHUNKABLE`."""
    if isinstance(chunk_bp, bool) or not isinstance(chunk_bp, int) or chunk_bp < 1:
        raise ValueError(f"chunk_bp must be a positive int, got {chunk_bp!r}")
    if config is not None and not config.causal:
        raise ValueError(NOT_CHUNKABLE.format(kind=config.kind))


# Why a non-causal model cannot run chunk-major: its reverse direction runs from the end, so no chunk of a layer's
# output is final before the layer below has produced the whole sequence. The most a bidirectional model could keep
# is one (b, l, d) residual per layer, which is what per-block activation checkpointing already stores.
NOT_CHUNKABLE = (
    "chunk_bp (--chunk-bp) needs a causal model: a {kind} model reads each sequence from both ends, so a layer's "
    "output for any chunk depends on the whole sequence of the layer below and chunks cannot go through all layers "
    "one at a time. Drop --chunk-bp; to use less memory lower --batch-size (when training, "
    "--activation-checkpointing helps too)"
)
