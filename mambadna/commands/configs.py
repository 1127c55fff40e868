"""The settings of every command, one dataclass each, and how a command line becomes one (`resolve`).

`pretrain` and `finetune` take PretrainConfig / FinetuneConfig (mambadna/run_config.py, which also declares the
shared sections: runtime, data, optim, train); the other commands' settings are declared here, from the same
sections where they apply, so `evaluate`, `embed` and `pretrain` take the same runtime flags and every command
takes `--recipe` and `--set`. `COMMANDS` names each command's settings and the module whose `run(cfg)` runs it;
mambadna/cli.py builds the command line from these declarations alone.

Nothing here imports torch: the CLI reads and checks all settings before the seconds torch takes to import.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from mambadna.commands.embedding_io import EMBEDDING_FORMATS
from mambadna.config import POOLINGS, setting
from mambadna.run_config import (DataSpec, FinetuneConfig, PretrainConfig, RuntimeSpec, apply_overrides,
                                 apply_recipe, changed_settings, check_label_regex, load_config, load_recipe,
                                 read_recipe, transient_keys)
from mambadna.settings import flatten, leaf_settings, to_dict

# every command that takes a model reads either format, from a folder or the Hub (mambadna/checkpoint.py)
MODEL_REF = ", a transformers Mamba folder, or a Hub id (owner/name)"
EXPORT_FORMATS = ("transformers", "mambadna")
# model settings that choose how the model runs, not its weights: a resumed run may change them
RUN_ONLY = ("model.scan_backend", "model.scan_kernel", "model.conv_backend", "model.norm_backend")


def _positive_int(name: str, value, minimum: int = 1, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"at least {minimum}" if minimum > 1 else "an integer >= 0"
        raise ValueError(f"{name} must be {what}, got {value!r}")


def _overwrite(what: str):
    return setting(False, flag="--overwrite", transient=True, help=f"replace {what} if it exists (never an input "
                   "file)")


@dataclass
class EvaluateConfig:
    checkpoint: str = setting("", positional=True, help=f"save_pretrained folder (e.g. runs/finetune/model)"
                              f"{MODEL_REF}")
    out_dir: str = setting("runs/evaluate", flag="--out", help="folder for evaluation.json and the confusion matrix")
    data: DataSpec = setting(help="test data: a classifier's manifest or --test file, a language model's genome",
                             factory=lambda: DataSpec(window_bp=256, batch_size=32))
    runtime: RuntimeSpec = setting(help="where the evaluation runs", factory=lambda: RuntimeSpec(devices="1"))
    chunk_bp: int | None = setting(None, flag="--chunk-bp", help="run each window in chunks of this many bases, "
                                   "carrying the state: the same metrics in memory that grows with the chunk, not "
                                   "the window")
    overwrite: bool = _overwrite("an evaluation.json in --out")

    def __post_init__(self):
        _positive_int("chunk_bp", self.chunk_bp, allow_none=True)


@dataclass
class EmbedConfig:
    checkpoint: str = setting("", positional=True, help=f"saved model folder (a MambaLM, or a classifier's "
                              f"backbone){MODEL_REF}")
    input: str = setting("", positional=True, input=True, help="FASTA, a table (CSV/TSV, parquet or a Hugging Face datasets "
                         "folder) with a 'sequence' column (optional 'name', 'label'), or with --regions the "
                         "reference FASTA")
    out_dir: str = setting("runs/embed", flag="--out", help="output folder (embeddings.npy + index.tsv, "
                           "embeddings.parquet or embeddings.h5ad)")
    format: str = setting("npy", flag="--format", choices=EMBEDDING_FORMATS,
                          help="npy + index.tsv, parquet (one row per sequence: name, label, length_bp, embedding) "
                               "or h5ad (AnnData: X = vectors, obs = name, label, length_bp); parquet and h5ad need "
                               "pip install 'mambadna[formats]'")
    pooling: str = setting("mean", flag="--pooling", choices=POOLINGS, help="pooling of positions")
    per_position: bool = setting(False, flag="--per-position", help="also write per_position.npy (streamed to "
                                 "disk)")
    per_position_dtype: str = setting("float16", flag="--per-position-dtype", choices=("float16", "float32"),
                                      help="dtype of per_position.npy")
    regions: str = setting("", flag="--regions", metavar="BED", input=True, help="embed these BED regions of the input FASTA "
                           "(name: column 4; minus-strand regions are reverse-complemented)")
    layer: int | None = setting(None, flag="--layer", help="embed the output of this block (0-based) instead of the "
                                "final hidden states")
    rc_average: bool = setting(False, flag="--rc-average", help="average with the reverse complement's vectors")
    label_regex: str = setting("", flag="--label-regex", help="regex with one group taking a label from FASTA "
                               "headers (or BED names)")
    max_length_bp: int | None = setting(None, flag="--max-length-bp", help="truncate sequences to this many bases")
    batch_size: int = setting(16, flag="--batch-size", help="sequences per batch (of similar lengths)")
    chunk_bp: int | None = setting(None, flag="--chunk-bp", help="run sequences through the model in chunks of "
                                   "this many bases, carrying the state: memory grows with the chunk, not the "
                                   "sequence; same output (none: chunks of 65536 for longer sequences)")
    runtime: RuntimeSpec = setting(help="where the embedding runs (--devices N: the sequences spread over N GPUs, "
                                   "or N CPU processes with --accelerator cpu)",
                                   factory=lambda: RuntimeSpec(devices="1", precision="auto"))
    device: str = setting("", flag="--device", help="one device by name: auto, cpu, cuda or cuda:N (instead of "
                          "--accelerator / --devices)")
    overwrite: bool = _overwrite("embeddings already in --out")

    def __post_init__(self):
        _positive_int("--batch-size", self.batch_size)
        _positive_int("--max-length-bp", self.max_length_bp, allow_none=True)
        for name, options in (("format", EMBEDDING_FORMATS), ("pooling", POOLINGS),
                              ("per_position_dtype", ("float16", "float32"))):
            if getattr(self, name) not in options:
                raise ValueError(f"--{name.replace('_', '-')} must be one of {options}, got {getattr(self, name)!r}")
        if self.label_regex:
            check_label_regex(self.label_regex, "--label-regex")


@dataclass
class GenerateConfig:
    checkpoint: str = setting("", positional=True, help=f"save_pretrained MambaLM folder{MODEL_REF}")
    prompt: str = setting("ACGT", flag="--prompt", help="DNA to continue")
    num: int = setting(1, flag="--num", help="number of sequences")
    length_bp: int = setting(200, flag="--length-bp", help="bases to generate after the prompt")
    temperature: float = setting(1.0, flag="--temperature", help="sampling temperature (0 = greedy)")
    top_k: int | None = setting(None, flag="--top-k", help="sample among the k most likely bases")
    seed: int = setting(0, flag="--seed", help="random seed")
    runtime: RuntimeSpec = setting(help="where the sampling runs (one device)",
                                   factory=lambda: RuntimeSpec(devices="1"))
    device: str = setting("", flag="--device", help="one device by name: auto, cpu, cuda or cuda:N (instead of "
                          "--accelerator / --devices)")
    out: str = setting("runs/generate/generated.fa", flag="--out", help="output FASTA")
    backbone: bool = setting(False, flag="--backbone", help="sample from a fine-tuned classifier's backbone "
                             "(refused otherwise: it is no longer the pretrained language model)")
    overwrite: bool = _overwrite("the --out file")

    def __post_init__(self):
        _positive_int("--num", self.num)
        _positive_int("--length-bp", self.length_bp, minimum=0)
        if isinstance(self.temperature, bool) or not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"--temperature must be a finite number >= 0, got {self.temperature!r}")


@dataclass
class ProbeConfig:
    embeddings: str = setting("", positional=True, input=True, help="folder written by `mambadna embed` (labels from "
                              "index.tsv)")
    folds: int = setting(5, flag="--folds", help="cross-validation folds (at least 2)")
    out_dir: str = setting("", flag="--out", help="folder for probe.json and pca.png (empty: the embeddings "
                           "folder)")
    overwrite: bool = _overwrite("probe.json and pca.png")

    def __post_init__(self):
        _positive_int("--folds", self.folds, minimum=2)


@dataclass
class ExportConfig:
    checkpoint: str = setting("", positional=True, help=f"the model to export: save_pretrained folder{MODEL_REF}")
    out: str = setting("", positional=True, help="output folder")
    format: str = setting("transformers", flag="--format", choices=EXPORT_FORMATS,
                          help="transformers (loads in transformers.MambaForCausalLM / AutoTokenizer, no custom "
                               "code) or mambadna (e.g. to convert a transformers folder)")
    backbone: bool = setting(False, flag="--backbone", help="export a classifier's language model (transformers' "
                             "Mamba has no classification class)")
    overwrite: bool = _overwrite("a model already in the output folder")

    def __post_init__(self):
        if self.format not in EXPORT_FORMATS:
            raise ValueError(f"export format must be one of {EXPORT_FORMATS}, got {self.format!r}")


@dataclass
class DemoConfig:
    out_dir: str = setting("runs/demo", flag="--out", help="output folder")
    quick: bool = setting(False, flag="--quick", help="a handful of steps only (a smoke run, not a result)")
    progress_bar: bool = setting(True, flag="--no-progress", flag_help="hide the progress bars",
                                 help="show the progress bars")
    overwrite: bool = _overwrite("an earlier demo in --out (moved aside to <out>.old-N)")


@dataclass
class NormalizeConfig:
    input: str = setting("", positional=True, input=True, help="FASTA, plain or gzip (never changed)")
    output: str = setting("", positional=True, help="new FASTA to write (must not exist)")


@dataclass
class StepsConfig:
    recipe: str = setting("", positional=True, help="recipe file (TOML or JSON) of [[step]] tables, each naming its "
                          "`command` (pretrain, finetune, evaluate, embed, ...) and that command's settings")

    def __post_init__(self):
        if self.recipe:
            step_configs(self.recipe)  # every step's settings are checked before the first one runs


def step_configs(path) -> list[tuple[str, object]]:
    """(command, settings) of each `[[step]]` of a chained recipe file, in order: each step's table is a recipe of
    its command (its own defaults, then the table's settings), so a benchmark is one file, e.g. pretrain ->
    finetune (pretrained = the pretrain step's out_dir + "/model") -> evaluate."""
    recipe = read_recipe(path)
    steps = recipe.get("step")
    if not isinstance(steps, list) or not steps or set(recipe) != {"step"}:
        raise ValueError(f"recipe {path}: a chained recipe is a list of [[step]] tables (and nothing else), each with "
                         "a command and its settings")
    out = []
    for i, table in enumerate(steps, 1):
        table = dict(table)
        name = table.pop("command", None)
        if name not in COMMANDS or name == "run":
            raise ValueError(f"recipe {path}: step {i} needs command = one of "
                             f"{', '.join(n for n in COMMANDS if n != 'run')}, got {name!r}")
        out.append((name, apply_recipe(COMMANDS[name][0](), table, f"recipe {path}, step {i} ({name})")))
    return out


# A positional argument's default ("") stands for "not given": argparse requires it on the command line.
# name: (settings class, module with `run(cfg) -> summary`, one line of help, title of the printed summary or None
# when the command prints its own; the title is formatted with the summary's and the settings' values)
COMMANDS = {
    "pretrain": (PretrainConfig, "mambadna.commands.pretrain",
                 "causal-LM pretraining on a genome (default: the bundled genomes)", "pretraining done"),
    "finetune": (FinetuneConfig, "mambadna.commands.finetune",
                 "train a sequence classifier (default: which bundled genome a window is from)", "fine-tuning done"),
    "evaluate": (EvaluateConfig, "mambadna.commands.evaluate",
                 "test metrics of a saved model (classifier or language model)", "evaluation"),
    "embed": (EmbedConfig, "mambadna.commands.embed",
              "per-sequence (and per-position) embeddings of a FASTA, table or BED regions",
              "embedded {sequences} sequences (d = {d})"),
    "generate": (GenerateConfig, "mambadna.commands.generate",
                 "sample DNA from a prompt with the recurrent step; writes FASTA", None),
    "probe": (ProbeConfig, "mambadna.commands.probe", "cross-validated logistic regression on embeddings, beside a "
              "k-mer baseline on the same sequences, + PCA scatter",
              "linear probe (cross-validated logistic regression) and the k-mer baseline on the same folds"),
    "export": (ExportConfig, "mambadna.commands.export",
               "write a model in transformers' Mamba format (MambaForCausalLM + tokenizer)",
               "exported {checkpoint} as {format}"),
    "demo": (DemoConfig, "mambadna.commands.demo", "pretrain + fine-tune + embed on the bundled DNA, a few CPU "
             "minutes", None),
    "normalize": (NormalizeConfig, "mambadna.commands.normalize", "rewrite a FASTA pyfaidx cannot index (ragged "
                  "lines, blank lines, mixed line endings, gzip) as a clean plain copy", None),
    "run": (StepsConfig, "mambadna.commands.steps", "run the steps of a chained recipe file in order (e.g. pretrain "
            "-> finetune -> evaluate)", None),
}


def resolve(cls, recipe: str | None = None, assignments=(), start=None):
    """A command's settings: `start` (default: the class's defaults), then a recipe file, then `key=value`
    assignments (flags and --set, in order). For a pretrain / finetune run given --resume or --resume-from, the
    run's saved run_config.json is the start instead, so the same flags need not be given again; a change to the
    model shape is refused (the checkpoint holds the saved shape's weights), other changes are reported."""
    cfg = start if start is not None else cls()
    if recipe:
        cfg = load_recipe(cfg, recipe)
    cfg = apply_overrides(cfg, list(assignments))
    if start is not None or not (getattr(cfg, "resume", False) or getattr(cfg, "resume_from", "")):
        return cfg
    saved_path = _saved_config(cfg.out_dir, cfg.resume_from)
    if saved_path is None:
        return cfg  # start_run says what is missing when there is no run to resume
    saved = load_config(saved_path)
    if type(saved) is not cls:
        other = "finetune" if isinstance(saved, FinetuneConfig) else "pretrain"
        raise ValueError(f"{saved_path} belongs to a `mambadna {other}` run; continue it with that command")
    resumed = resolve(cls, recipe, assignments, start=dataclasses.replace(saved, out_dir=cfg.out_dir))
    ignored = {"out_dir", "train.progress_bar", "train.progress_every_s", *transient_keys(cls)}
    changes = [c for c in changed_settings(saved, resumed) if c[0] not in ignored]
    shape = [f"{k} {a} -> {b}" for k, a, b in changes if k.startswith("model.") and k not in RUN_ONLY]
    if shape:
        raise ValueError(f"cannot resume with another model shape ({'; '.join(shape[:4])}): the checkpoint holds the "
                         f"weights of the saved one ({saved_path}); drop the model.* settings, or start a new --out")
    if changes:
        print("resuming with changed settings: " + "; ".join(f"{k} {a} -> {b}" for k, a, b in changes),
              file=sys.stderr)
    return resumed


def check_inputs(cfg) -> None:
    """Every input file or folder the settings name (`setting(..., input=True)`) exists: checked with the other
    arguments, before torch loads, so a mistyped path answers at once."""
    values = flatten(to_dict(cfg))
    for key, _, f in leaf_settings(type(cfg)):
        value = values.get(key)
        if f.metadata.get("input") and value and not Path(value).exists():
            where = f.metadata.get("flag") or ("the argument " + key if f.metadata.get("positional") else key)
            raise ValueError(f"{value}: no such file or folder ({where})")


def _saved_config(out_dir: str, resume_from: str) -> Path | None:
    """The run_config.json a resumed run starts from: --out's, or that of the run CKPT belongs to."""
    own = Path(out_dir) / "run_config.json"
    if own.is_file():
        return own
    if resume_from:
        theirs = Path(resume_from).resolve().parent.parent / "run_config.json"
        return theirs if theirs.is_file() else None
    return None
