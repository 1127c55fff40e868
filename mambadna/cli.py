"""The `mambadna` command: pretrain, finetune, evaluate, embed, generate, probe, export and demo.

Run settings (pretrain, finetune) resolve in this order: the subcommand's defaults, then `--recipe FILE` (TOML/JSON,
nested like the run config), then the flags (every setting is `--section.key VALUE`, the common ones also have a
short alias such as --steps; all are generated from the dataclasses of mambadna/run_config.py), then
`--set key=value` (dotted keys). Bad input of any kind ends with one line `error: ...` and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

from mambadna.config import POOLINGS
from mambadna.version import __version__

# every command that takes a model reads either format, from a folder or the Hub (mambadna/checkpoint.py)
MODEL_REF_HELP = ", a transformers Mamba folder, or a Hub id (owner/name)"


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so `main` can answer with one `error:` line and code 2."""

    def error(self, message):
        raise argparse.ArgumentError(None, f"{message} (see `{self.prog} --help`)")


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _run_settings(finetune: bool):
    """(dotted key, type, field, default) of the settings a pretrain / finetune run takes (mambadna/run_config.py)."""
    from mambadna import run_config as rc

    cls, run = (rc.FinetuneConfig, "finetune") if finetune else (rc.PretrainConfig, "pretrain")
    defaults = _flatten(rc.to_dict(cls()))
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
    p.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoints/last.ckpt")
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
    p.add_argument("--window-bp", type=int, default=256, help="window length in bases")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per batch")
    p.add_argument("--chunk-bp", type=int, metavar="INT", help="run each window in chunks of this many bases, "
                   "carrying the state: the same metrics in memory that grows with the chunk, not the window")
    p.add_argument("--out", default="runs/evaluate", help="folder for evaluation.json and the confusion matrix")

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
    p.add_argument("--max-length-bp", type=int, help="truncate sequences to this many bases")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per batch (of similar lengths)")
    p.add_argument("--chunk-bp", type=int, metavar="INT", help="run sequences through the model in chunks of "
                   "this many bases, carrying the state: memory grows with the chunk, not the sequence; same output "
                   f"(default: chunks of {1 << 16} for longer sequences)")
    p.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "32"),
                   help="auto: bf16 autocast on a GPU, fp32 on the CPU")

    p = sub.add_parser("generate", help="sample DNA from a prompt with the recurrent step; writes FASTA")
    p.add_argument("checkpoint", help=f"save_pretrained MambaLM folder{MODEL_REF_HELP}")
    p.add_argument("--prompt", default="ACGT", help="DNA to continue")
    p.add_argument("--num", type=int, default=1, help="number of sequences")
    p.add_argument("--length-bp", type=int, default=200, help="bases to generate after the prompt")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0 = greedy)")
    p.add_argument("--top-k", type=int, help="sample among the k most likely bases")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--out", default="runs/generate/generated.fa", help="output FASTA")

    p = sub.add_parser("probe", help="cross-validated logistic regression on embeddings + PCA scatter")
    p.add_argument("embeddings", help="folder written by `mambadna embed` (labels from index.tsv)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    p.add_argument("--out", help="folder for probe.json and pca.png (default: the embeddings folder)")

    p = sub.add_parser("export", help="write a model in transformers' Mamba format (MambaForCausalLM + tokenizer)")
    p.add_argument("checkpoint", help=f"the model to export: save_pretrained folder{MODEL_REF_HELP}")
    p.add_argument("out", help="output folder")
    p.add_argument("--format", default="transformers", choices=("transformers", "mambadna"),
                   help="transformers (loads in transformers.MambaForCausalLM / AutoTokenizer, no custom code) or "
                        "mambadna (e.g. to convert a transformers folder)")
    p.add_argument("--backbone", action="store_true", help="export a classifier's language model (transformers' Mamba "
                   "has no classification class)")

    p = sub.add_parser("demo", help="pretrain + fine-tune + embed on the bundled DNA, a few CPU minutes")
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--quick", action="store_true", help="a handful of steps only (a smoke run, not a result)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def _run_config(args, finetune: bool):
    from mambadna import run_config as rc

    cfg = rc.FinetuneConfig() if finetune else rc.PretrainConfig()
    if args.recipe:
        cfg = rc.load_recipe(cfg, args.recipe)
    given = {k[4:]: v for k, v in vars(args).items() if k.startswith("set:") and v is not None}
    # a preset replaces the whole model section, so it goes before the model.* flags that change it
    sets = [f"{key}={value}" for key, value in sorted(given.items(), key=lambda kv: kv[0] != "model.preset")]
    return rc.apply_overrides(cfg, sets + args.overrides)


def _print_summary(title: str, summary: dict) -> None:
    print(f"\n{title}")
    for key, value in summary.items():
        if key != "confusion_matrix":
            print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")


def _cmd_train(args, finetune: bool) -> int:
    from mambadna.commands.train import run_finetune, run_pretrain

    cfg = _run_config(args, finetune)
    summary = (run_finetune if finetune else run_pretrain)(cfg, resume=args.resume)
    _print_summary("fine-tuning done" if finetune else "pretraining done", summary)
    return 0


def _cmd_evaluate(args) -> int:
    from mambadna import run_config as rc
    from mambadna.commands.evaluate import evaluate

    data = rc.DataSpec(manifest=args.manifest or "", train=args.test or "", test=args.test or "",
                       label_regex=args.label_regex, window_bp=args.window_bp, batch_size=args.batch_size)
    cfg = rc.FinetuneConfig(out_dir=args.out, data=data, train=rc.TrainSpec(chunk_bp=args.chunk_bp))
    _print_summary("evaluation", evaluate(args.checkpoint, cfg, genome=args.genome))
    return 0


def _cmd_embed(args) -> int:
    from mambadna.commands.embed import run_embed

    result = run_embed(args.checkpoint, args.input, args.out, args.pooling, args.per_position, args.batch_size,
                       args.max_length_bp, args.chunk_bp, args.device, args.layer, args.rc_average, args.regions,
                       args.label_regex, args.precision, args.per_position_dtype, args.format)
    _print_summary(f"embedded {result['sequences']} sequences (d = {result['d']})", result)
    return 0


def _cmd_generate(args) -> int:
    from mambadna.commands.embed import load_lm, resolve_device
    from mambadna.commands.generate import generate_fasta

    seqs = generate_fasta(load_lm(args.checkpoint, map_location=resolve_device(args.device)), args.prompt, args.out,
                          args.num, args.length_bp, args.temperature, args.top_k, args.seed)
    print(f"wrote {len(seqs)} sequence(s) of {len(seqs[0])} bp to {args.out}")
    return 0


def _cmd_probe(args) -> int:
    from mambadna.commands.embedding_io import read_embeddings
    from mambadna.commands.plots import plot_pca
    from mambadna.commands.probe import probe_embeddings

    vectors, labels = read_embeddings(args.embeddings)
    result = probe_embeddings(vectors, labels, args.folds)
    out = Path(args.out or args.embeddings)
    out.mkdir(parents=True, exist_ok=True)
    plot_pca(vectors, labels, out / "pca.png")
    (out / "probe.json").write_text(json.dumps(result, indent=2) + "\n")
    _print_summary("linear probe (cross-validated logistic regression)", {**result, "pca": str(out / "pca.png")})
    return 0


def _cmd_export(args) -> int:
    from mambadna.commands.export import export_model

    files = export_model(args.checkpoint, args.out, fmt=args.format, backbone=args.backbone)
    _print_summary(f"exported {args.checkpoint} as {args.format}", files)
    return 0


def _cmd_demo(args) -> int:
    from mambadna.commands.demo import run_demo

    run_demo(args.out, quick=args.quick, progress_bar=not args.no_progress)
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
    "export": _cmd_export, "demo": _cmd_demo,
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
    _quiet_lightning(args.verbose)
    start = time.time()
    try:
        code = COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        # mambadna.data.DataError, run-config errors and the tasks' errors are all ValueErrors with a message
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; continue with --resume", file=sys.stderr)
        return 130
    if args.verbose:
        print(f"({args.command} took {time.time() - start:.1f} s)")
    return code
