"""The `mambadna` command: pretrain, finetune, evaluate, embed, generate, probe, export and demo.

Run settings (pretrain, finetune) resolve in this order: the subcommand's defaults, then `--recipe FILE` (TOML/JSON,
nested like the run config), then the flags (every setting is `--section.key VALUE`, the common ones also have a
short alias such as --steps; all are generated from the dataclasses of mambadna/run_config.py), then
`--set key=value` (dotted keys). `--resume` starts from the run's saved run_config.json instead of the defaults,
so the same flags need not be given again (a flag given then changes that setting; a model shape cannot change).

Every failure a user can cause (bad files, bad values, resources, environment) ends with one line `error: ...`
and exit code 2 (mambadna/errors.py); `--debug` or MAMBADNA_DEBUG=1 adds the traceback. SIGINT / SIGTERM / SIGHUP
end with one line and exit code 130 / 143 / 129, after saving a checkpoint when they arrive during training.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

from mambadna.config import POOLINGS
from mambadna.errors import error_line, one_line_warning
from mambadna.version import __version__

# every command that takes a model reads either format, from a folder or the Hub (mambadna/checkpoint.py)
MODEL_REF_HELP = ", a transformers Mamba folder, or a Hub id (owner/name)"


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so `main` can answer with one `error:` line and code 2."""

    def error(self, message):
        # a subcommand's parser has said where to look already; its parent re-raises through here
        where = "" if "--help`)" in message else f" (see `{self.prog} --help`)"
        raise argparse.ArgumentError(None, message + where)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _at_least_two(text: str) -> int:
    value = _positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2, got {text!r}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _add_common(p: argparse.ArgumentParser) -> None:
    # also accepted after the subcommand, where users put them; SUPPRESS keeps the top-level value otherwise
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="on an error, show the Python traceback too (or set MAMBADNA_DEBUG=1)")
    p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="show Lightning's info messages and warnings")


def _add_overwrite(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--overwrite", action="store_true", help=f"replace {what} if it exists (never an input file)")


def _run_settings(finetune: bool):
    """(dotted key, type, field, default) of the settings a pretrain / finetune run takes (mambadna/run_config.py)."""
    from mambadna import run_config as rc
    from mambadna.settings import flatten

    cls, run = (rc.FinetuneConfig, "finetune") if finetune else (rc.PretrainConfig, "pretrain")
    defaults = flatten(rc.to_dict(cls()))
    for key, kind, f in rc.leaf_settings(cls):
        if run in f.metadata.get("runs", (run,)):
            yield key, kind, f, defaults.get(key)


def _add_run_flags(p: argparse.ArgumentParser, finetune: bool) -> None:
    """Every run setting as `--section.key VALUE` (and its short alias), help and default from its dataclass
    field: a setting added to the run config appears here by itself."""
    from mambadna.config import PRESETS

    p.add_argument("--recipe", metavar="FILE", help="TOML or JSON recipe file with run settings (nested tables)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one setting by dotted key, e.g. --set train.max_steps=200 (repeatable; applied "
                        "after the recipe and the flags)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest checkpoint, with its saved settings (flags given "
                        "change them; the model shape cannot change)")
    p.add_argument("--resume-from", metavar="CKPT", help="continue from this checkpoint file (of --out's run, or of "
                   "another run into a new --out)")
    p.add_argument("--overwrite", nargs="?", const="move", choices=("move", "delete"), metavar="move|delete",
                   help="start afresh where --out already holds a run: move the old run aside to <out>.old-N "
                        "(default) or delete the files a run writes")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key, kind, f, default in _run_settings(finetune):
        section = key.split(".")[0] if "." in key else "run"
        group = groups.get(section)
        if group is None:
            group = groups[section] = p.add_argument_group(f"{section} settings")
            if section == "model":
                group.add_argument("--model", "--model.preset", dest="set:model.preset", metavar="PRESET",
                                   choices=tuple(PRESETS), help="start the model from a preset: "
                                   f"{', '.join(PRESETS)} (model.* flags then change it)")
        dest, flag = f"set:{key}", f.metadata.get("flag")
        text = f.metadata.get("help", "")
        if kind is bool and flag:
            group.add_argument(flag, dest=dest, action="store_const", const=str(not default).lower(),
                               help=f"{text} (sets {key}={str(not default).lower()})")
            group.add_argument(f"--{key}", dest=dest, metavar="BOOL", help=f"{text} (default: {default})")
            continue
        names = [flag, f"--{key}"] if flag else [f"--{key}"]
        group.add_argument(*names, dest=dest, metavar=key.split(".")[-1].upper(), choices=f.metadata.get("choices"),
                           help=f"{text} (default: {default})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mambadna", description="Mamba DNA language models: pretrain, fine-tune, embed, generate.")
    parser.add_argument("--version", action="version", version=f"mambadna {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show Lightning's info messages and warnings")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the Python traceback too (or set MAMBADNA_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("pretrain", help="causal-LM pretraining on a genome (default: the bundled genomes)")
    _add_run_flags(p, finetune=False)
    p = sub.add_parser("finetune", help="train a sequence classifier (default: which bundled genome a window is from)")
    _add_run_flags(p, finetune=True)

    p = sub.add_parser("evaluate", help="test metrics of a saved model (classifier or language model)")
    p.add_argument("checkpoint", help=f"save_pretrained folder (e.g. runs/finetune/model){MODEL_REF_HELP}")
    p.add_argument("--manifest", help="species manifest for a classifier (default: the bundled genomes)")
    p.add_argument("--test", help="labelled test file (CSV/TSV or FASTA) for a classifier")
    p.add_argument("--label-regex", default="", help="regex with one group picking the label from FASTA headers")
    p.add_argument("--genome", default="", help="genome for a language model's bits per base (default: bundled)")
    p.add_argument("--window-bp", type=_positive_int, help="window length in bases (default: the window the model "
                   "was trained on, from its training.json; else 256)")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="sequences per batch")
    p.add_argument("--chunk-bp", type=_positive_int, metavar="INT", help="run each window in chunks of this many "
                   "bases, carrying the state: the same metrics in memory that grows with the chunk, not the window")
    p.add_argument("--accelerator", default="auto", choices=("auto", "cpu", "gpu", "cuda", "mps"),
                   help="where to run: auto, cpu or gpu")
    p.add_argument("--out", default="runs/evaluate", help="folder for evaluation.json and the confusion matrix")
    _add_overwrite(p, "an evaluation.json in --out")

    p = sub.add_parser("embed", help="per-sequence (and per-position) embeddings of a FASTA, table or BED regions")
    p.add_argument("checkpoint", help=f"saved model folder (a MambaLM, or a classifier's backbone){MODEL_REF_HELP}")
    p.add_argument("input", help="FASTA, a table (CSV/TSV, parquet or a Hugging Face datasets folder) with a "
                   "'sequence' column (optional 'name', 'label'), or with --regions the reference FASTA")
    p.add_argument("--out", default="runs/embed", help="output folder (embeddings.npy + index.tsv, "
                   "embeddings.parquet or embeddings.h5ad)")
    p.add_argument("--format", default="npy", choices=("npy", "parquet", "h5ad"), help="npy + index.tsv (default), "
                   "parquet (one row per sequence: name, label, length_bp, embedding) or h5ad (AnnData: X = vectors, "
                   "obs = name, label, length_bp); parquet and h5ad need pip install 'mambadna[formats]'")
    p.add_argument("--pooling", default="mean", choices=POOLINGS, help="pooling of positions")
    p.add_argument("--per-position", action="store_true", help="also write per_position.npy (streamed to disk)")
    p.add_argument("--per-position-dtype", default="float16", choices=("float16", "float32"),
                   help="dtype of per_position.npy")
    p.add_argument("--regions", metavar="BED", help="embed these BED regions of the input FASTA (name: column 4; "
                   "minus-strand regions are reverse-complemented)")
    p.add_argument("--layer", type=int, help="embed the output of this block (0-based) instead of the final "
                   "hidden states")
    p.add_argument("--rc-average", action="store_true", help="average with the reverse complement's vectors")
    p.add_argument("--label-regex", default="", help="regex with one group taking a label from FASTA headers "
                   "(or BED names)")
    p.add_argument("--max-length-bp", type=_positive_int, help="truncate sequences to this many bases")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="sequences per batch (of similar lengths)")
    p.add_argument("--chunk-bp", type=int, metavar="INT", help="run sequences through the model in chunks of "
                   "this many bases, carrying the state: memory grows with the chunk, not the sequence; same output "
                   f"(default: chunks of {1 << 16} for longer sequences)")
    p.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--devices", type=_positive_int, default=1, help="spread the sequences over this many GPUs (or "
                   "CPU processes with --device cpu) through Lightning's predict loop")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "32"),
                   help="auto: bf16 autocast on a GPU, fp32 on the CPU")
    _add_overwrite(p, "embeddings already in --out")

    p = sub.add_parser("generate", help="sample DNA from a prompt with the recurrent step; writes FASTA")
    p.add_argument("checkpoint", help=f"save_pretrained MambaLM folder{MODEL_REF_HELP}")
    p.add_argument("--prompt", default="ACGT", help="DNA to continue")
    p.add_argument("--num", type=_positive_int, default=1, help="number of sequences")
    p.add_argument("--length-bp", type=int, default=200, help="bases to generate after the prompt")
    p.add_argument("--temperature", type=_finite_float, default=1.0, help="sampling temperature (0 = greedy)")
    p.add_argument("--top-k", type=int, help="sample among the k most likely bases")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--backbone", action="store_true", help="sample from a fine-tuned classifier's backbone (refused "
                   "otherwise: it is no longer the pretrained language model)")
    p.add_argument("--out", default="runs/generate/generated.fa", help="output FASTA")
    _add_overwrite(p, "the --out file")

    p = sub.add_parser("probe", help="cross-validated logistic regression on embeddings + PCA scatter")
    p.add_argument("embeddings", help="folder written by `mambadna embed` (labels from index.tsv)")
    p.add_argument("--folds", type=_at_least_two, default=5, help="cross-validation folds (at least 2)")
    p.add_argument("--out", help="folder for probe.json and pca.png (default: the embeddings folder)")
    _add_overwrite(p, "probe.json and pca.png")

    p = sub.add_parser("export", help="write a model in transformers' Mamba format (MambaForCausalLM + tokenizer)")
    p.add_argument("checkpoint", help=f"the model to export: save_pretrained folder{MODEL_REF_HELP}")
    p.add_argument("out", help="output folder")
    p.add_argument("--format", default="transformers", choices=("transformers", "mambadna"),
                   help="transformers (loads in transformers.MambaForCausalLM / AutoTokenizer, no custom code) or "
                        "mambadna (e.g. to convert a transformers folder)")
    p.add_argument("--backbone", action="store_true", help="export a classifier's language model (transformers' Mamba "
                   "has no classification class)")
    _add_overwrite(p, "a model already in the output folder")

    p = sub.add_parser("demo", help="pretrain + fine-tune + embed on the bundled DNA, a few CPU minutes")
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--quick", action="store_true", help="a handful of steps only (a smoke run, not a result)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_overwrite(p, "an earlier demo in --out (moved aside to <out>.old-N)")

    p = sub.add_parser("normalize", help="rewrite a FASTA pyfaidx cannot index (ragged lines, blank lines, mixed "
                       "line endings, gzip) as a clean plain copy")
    p.add_argument("input", help="FASTA, plain or gzip (never changed)")
    p.add_argument("output", help="new FASTA to write (must not exist)")
    for p in sub.choices.values():
        _add_common(p)
    return parser


def _apply_args(cfg, args):
    from mambadna import run_config as rc

    if args.recipe:
        cfg = rc.load_recipe(cfg, args.recipe)
    given = {k[4:]: v for k, v in vars(args).items() if k.startswith("set:") and v is not None}
    # a preset replaces the whole model section, so it goes before the model.* flags that change it
    sets = [f"{key}={value}" for key, value in sorted(given.items(), key=lambda kv: kv[0] != "model.preset")]
    return rc.apply_overrides(cfg, sets + args.overrides)


def _saved_config(out_dir: str, resume_from: str | None) -> Path | None:
    """The run_config.json a resumed run starts from: --out's, or that of the run CKPT belongs to."""
    own = Path(out_dir) / "run_config.json"
    if own.is_file():
        return own
    if resume_from:
        theirs = Path(resume_from).resolve().parent.parent / "run_config.json"
        return theirs if theirs.is_file() else None
    return None


def _run_config(args, finetune: bool):
    """The run's settings: defaults (or, resuming, the run's saved ones), then recipe, flags and --set."""
    from mambadna import run_config as rc

    cls = rc.FinetuneConfig if finetune else rc.PretrainConfig
    requested = _apply_args(cls(), args)
    saved_path = _saved_config(requested.out_dir, args.resume_from) if args.resume or args.resume_from else None
    if saved_path is None:
        return requested  # start_run says what is missing when there is no run to resume
    saved = rc.load_config(saved_path)
    if type(saved) is not cls:
        other = "finetune" if isinstance(saved, rc.FinetuneConfig) else "pretrain"
        raise ValueError(f"{saved_path} belongs to a `mambadna {other}` run; continue it with that command")
    resumed = _apply_args(dataclasses.replace(saved, out_dir=requested.out_dir), args)
    changes = [c for c in rc.changed_settings(saved, resumed) if c[0] not in ("out_dir", "train.progress_bar")]
    shape = [f"{k} {a} -> {b}" for k, a, b in changes if k.startswith("model.") and k != "model.scan_backend"]
    if shape:
        raise ValueError(f"cannot resume with another model shape ({'; '.join(shape[:4])}): the checkpoint holds the "
                         f"weights of the saved one ({saved_path}); drop the model.* settings, or start a new --out")
    if changes:
        print("resuming with changed settings: " + "; ".join(f"{k} {a} -> {b}" for k, a, b in changes),
              file=sys.stderr)
    return resumed


RUN_STATS = ("train_time_s", "wall_time_s", "bases_per_s", "peak_gpu_memory_mib")


def _print_summary(title: str, summary: dict) -> None:
    if "pytorch_lightning" in sys.modules:  # only then can this be one process of several
        from mambadna.commands.run_dir import is_rank_zero

        if not is_rank_zero():  # a multi-process run reports once, from the first process
            return
    print(f"\n{title}")
    for key, value in summary.items():
        if key == "confusion_matrix":
            continue
        if key == "peak_gpu_memory_mib" and value is None:
            print(f"  {key}: none (ran on the {summary.get('device', 'cpu')}, not a GPU)")
        elif key in RUN_STATS and isinstance(value, (int, float)):
            print(f"  {key}: {value:,.1f}")
        else:
            print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")


def _cmd_train(args, finetune: bool) -> int:
    from mambadna.commands.train import run_finetune, run_pretrain

    cfg = _run_config(args, finetune)
    args.out_dir = cfg.out_dir  # for the interrupt message
    summary = (run_finetune if finetune else run_pretrain)(cfg, resume=args.resume, resume_from=args.resume_from,
                                                            overwrite=args.overwrite)
    _print_summary("fine-tuning done" if finetune else "pretraining done", summary)
    return 0


def _cmd_evaluate(args) -> int:
    from mambadna.commands.run_dir import out_folder, refuse_existing
    from mambadna import run_config as rc
    from mambadna.commands.evaluate import evaluate

    out = out_folder(args.out)
    refuse_existing([out / "evaluation.json"], args.overwrite)
    data = rc.DataSpec(manifest=args.manifest or "", train=args.test or "", test=args.test or "",
                       label_regex=args.label_regex, window_bp=256, batch_size=args.batch_size)
    cfg = rc.FinetuneConfig(out_dir=args.out, data=data,
                            train=rc.TrainSpec(accelerator=args.accelerator, chunk_bp=args.chunk_bp))
    _print_summary("evaluation", evaluate(args.checkpoint, cfg, genome=args.genome, window_bp=args.window_bp))
    return 0


def _cmd_embed(args) -> int:
    from mambadna.commands.embed import run_embed
    from mambadna.commands.embedding_io import OUTPUT_NAMES
    from mambadna.commands.run_dir import out_folder, refuse_existing
    from mambadna.run_config import check_label_regex

    out = out_folder(args.out)
    outputs = [out / name for name in OUTPUT_NAMES]
    if Path(args.input).resolve() in [p.resolve() for p in outputs]:
        raise ValueError(f"--out {out} would overwrite the input {args.input}; choose another --out")
    refuse_existing(outputs, args.overwrite)  # any format's: two runs' results never sit side by side
    if args.label_regex:
        check_label_regex(args.label_regex, "--label-regex")
    try:
        result = run_embed(args.checkpoint, args.input, out, args.pooling, args.per_position, args.batch_size,
                           args.max_length_bp, args.chunk_bp, args.device, args.layer, args.rc_average, args.regions,
                           args.label_regex, args.precision, args.per_position_dtype, args.format, args.devices)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{args.input}: not a text file ({exc}); give a FASTA or a table") from None
    if result:  # the other processes of a --devices run leave the report to the first
        _print_summary(f"embedded {result['sequences']} sequences (d = {result['d']})", result)
    return 0


def _cmd_generate(args) -> int:
    from mambadna.commands.embed import resolve_device
    from mambadna.commands.generate import generate_fasta, load_generator
    from mambadna.commands.run_dir import refuse_existing

    out = Path(args.out)
    model_files = Path(args.checkpoint).resolve()
    if out.resolve().parent == model_files or out.resolve() == model_files:
        raise ValueError(f"--out {out} is inside the model folder {args.checkpoint}; choose another --out")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the FASTA file to write")
    refuse_existing([out], args.overwrite)
    model = load_generator(args.checkpoint, resolve_device(args.device), args.backbone)
    seqs = generate_fasta(model, args.prompt, out,
                          args.num, args.length_bp, args.temperature, args.top_k, args.seed)
    print(f"wrote {len(seqs)} sequence(s) of {len(seqs[0])} bp to {args.out}")
    return 0


def _cmd_probe(args) -> int:
    from mambadna.commands.embedding_io import read_embeddings
    from mambadna.commands.run_dir import out_folder, refuse_existing
    from mambadna.commands.plots import plot_pca
    from mambadna.commands.probe import probe_embeddings
    from mambadna.files import write_json

    out = out_folder(args.out or args.embeddings)
    refuse_existing([out / "probe.json", out / "pca.png"], args.overwrite)
    vectors, labels = read_embeddings(args.embeddings)
    result = probe_embeddings(vectors, labels, args.folds)
    out.mkdir(parents=True, exist_ok=True)
    plot_pca(vectors, labels, out / "pca.png")
    write_json(out / "probe.json", result)
    _print_summary("linear probe (cross-validated logistic regression)", {**result, "pca": str(out / "pca.png")})
    return 0


def _cmd_export(args) -> int:
    from mambadna.commands.export import export_model

    files = export_model(args.checkpoint, args.out, fmt=args.format, backbone=args.backbone, overwrite=args.overwrite)
    _print_summary(f"exported {args.checkpoint} as {args.format}", files)
    return 0


def _cmd_demo(args) -> int:
    from mambadna.commands.demo import run_demo
    from mambadna.commands.run_dir import out_folder, start_run

    out = out_folder(args.out)
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise ValueError(f"{out} already holds a demo; add --overwrite to move it aside, or choose another --out")
        moved = start_run(out, "demo", overwrite="move").moved_to
        if moved is None:  # a folder that is not a run: move it whole
            moved = out.with_name(out.name + ".old-demo")
            out.rename(moved)
        print(f"moved the earlier demo to {moved}", file=sys.stderr)
    run_demo(out, quick=args.quick, progress_bar=not args.no_progress)
    return 0


def _cmd_normalize(args) -> int:
    from mambadna.data import normalize_fasta

    source, target = Path(args.input), Path(args.output)
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise ValueError(f"{target} is the input itself; normalize never overwrites a file, give a new name")
    lengths = normalize_fasta(source, args.output)  # as typed: a trailing / says "a folder"
    print(f"wrote {target}: {len(lengths)} contig(s), {sum(lengths.values())} bp, 60 bases per line")
    return 0


def _quiet_lightning(verbose: bool) -> None:
    if verbose:
        return
    import pytorch_lightning  # noqa: F401  (it sets its loggers to INFO on import; lower them afterwards)

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")


COMMANDS = {
    "pretrain": lambda a: _cmd_train(a, finetune=False), "finetune": lambda a: _cmd_train(a, finetune=True),
    "evaluate": _cmd_evaluate, "embed": _cmd_embed, "generate": _cmd_generate, "probe": _cmd_probe,
    "export": _cmd_export, "demo": _cmd_demo, "normalize": _cmd_normalize,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except argparse.ArgumentError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help / --version
        return int(exit_.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("MAMBADNA_DEBUG", "") not in ("", "0")
    from mambadna.tasks.interrupts import Interrupted, install_handlers, restore_handlers

    previous_handlers, previous_warning = install_handlers(), warnings.showwarning
    warnings.showwarning = one_line_warning
    start = time.time()
    try:
        _quiet_lightning(args.verbose)
        code = COMMANDS[args.command](args)
    except Interrupted as exc:
        from mambadna.commands.run_dir import interrupted_line, is_rank_zero

        if is_rank_zero():  # the other processes of a DDP run stop with it, silently
            print(f"\n{interrupted_line(args.command, getattr(args, 'out_dir', None), exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # raised before the handlers were installed
        print("\ninterrupted (SIGINT)", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 (the one error boundary: every failure becomes one line)
        message, code = error_line(err)
        if debug:
            traceback.print_exc()
        elif code != 2:
            message += " (rerun with --debug for the traceback)"
        print(f"error: {message}", file=sys.stderr)
        return code
    finally:
        from mambadna.files import release_all

        release_all()  # the folders the command held (a refused or failed one's empty new --out goes with it)
        restore_handlers(previous_handlers)
        warnings.showwarning = previous_warning
    if args.verbose:
        print(f"({args.command} took {time.time() - start:.1f} s)")
    return code
