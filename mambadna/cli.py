"""The `mambadna` command: pretrain, finetune, evaluate, embed, generate, probe and demo.

Settings resolve in this order: the subcommand's defaults, then `--recipe FILE` (TOML/JSON, nested like the run
config), then the shortcut flags (--steps, --window-bp, ...), then `--set key=value` (dotted keys). Bad input of
any kind ends with one line `error: ...` and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

from mambadna import __version__

# flag -> dotted config key, for the shortcuts shared by pretrain and finetune
SHORTCUTS = {
    "steps": "train.max_steps", "window_bp": "data.window_bp", "batch_size": "data.batch_size",
    "lr": "optim.lr", "precision": "train.precision", "devices": "train.devices", "strategy": "train.strategy",
    "accelerator": "train.accelerator", "accumulate": "train.accumulate_grad_batches",
    "ckpt_every": "train.ckpt_every_n_steps", "seed": "train.seed", "num_workers": "data.num_workers",
    "genome": "data.genome", "manifest": "data.manifest", "train": "data.train", "val": "data.val",
    "test": "data.test", "pretrained": "pretrained", "pooling": "pooling", "chunk_bp": "train.chunk_bp",
}


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so `main` can answer with one `error:` line and code 2."""

    def error(self, message):
        raise argparse.ArgumentError(None, f"{message} (see `{self.prog} --help`)")


def _add_run_flags(p: argparse.ArgumentParser, finetune: bool) -> None:
    p.add_argument("--recipe", metavar="FILE", help="TOML or JSON recipe file with run settings (nested tables)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one setting by dotted key, e.g. --set train.max_steps=200 (repeatable)")
    p.add_argument("--out", metavar="DIR", help="run directory for checkpoints, logs, plots and the final model")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoints/last.ckpt")
    p.add_argument("--steps", type=int, help="optimizer steps (train.max_steps)")
    p.add_argument("--window-bp", type=int, help="window length in bases (data.window_bp)")
    p.add_argument("--batch-size", type=int, help="sequences per batch per device (data.batch_size)")
    p.add_argument("--lr", type=float, help="peak learning rate (optim.lr)")
    p.add_argument("--precision", help="Lightning precision: 32-true, bf16-mixed, ... (train.precision)")
    p.add_argument("--devices", help="Lightning devices: auto, a count or a list like 0,1 (train.devices)")
    p.add_argument("--strategy", help="Lightning strategy: auto, ddp, ddp_spawn or fsdp (train.strategy)")
    p.add_argument("--accelerator", help="Lightning accelerator: auto, cpu or gpu (train.accelerator)")
    p.add_argument("--accumulate", type=int, help="gradient accumulation steps (train.accumulate_grad_batches)")
    p.add_argument("--ckpt-every", type=int, help="save a checkpoint every N steps (train.ckpt_every_n_steps)")
    p.add_argument("--seed", type=int, help="random seed (train.seed)")
    p.add_argument("--num-workers", type=int, help="DataLoader worker processes (data.num_workers)")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each Mamba block in backward to save memory (train.activation_checkpointing)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (train.compile)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (train.progress_bar=false)")
    if finetune:
        p.add_argument("--pretrained", metavar="DIR", help="save_pretrained MambaLM folder to start from "
                       "(default: train from scratch)")
        p.add_argument("--manifest", metavar="TSV", help="species manifest TSV or folder of FASTAs "
                       "(default: the bundled genomes)")
        p.add_argument("--train", metavar="FILE", help="labelled sequences (CSV/TSV or FASTA) instead of a manifest")
        p.add_argument("--val", metavar="FILE", help="labelled validation sequences")
        p.add_argument("--test", metavar="FILE", help="labelled test sequences")
        p.add_argument("--pooling", choices=("last", "mean", "cls"), help="feature pooling for the head")
        p.add_argument("--freeze-backbone", action="store_true", help="train only the classification head")
    else:
        p.add_argument("--genome", metavar="FASTA", help="genome to pretrain on (default: the bundled genomes)")
        p.add_argument("--chunk-bp", type=int, metavar="INT", help="run each sequence through all layers in chunks "
                       "of this many bases, carrying conv and SSM state and recomputing each chunk in the backward: "
                       "peak memory grows with the chunk, not the window; exact (train.chunk_bp)")
        p.add_argument("--tbptt", action="store_true", help="truncated BPTT: train over whole contigs in "
                       "consecutive windows of --window-bp, carrying the state forward without gradient; "
                       "--batch-size is the number of parallel streams (train.tbptt)")


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
    p.add_argument("checkpoint", help="save_pretrained folder (e.g. runs/finetune/model)")
    p.add_argument("--manifest", help="species manifest for a classifier (default: the bundled genomes)")
    p.add_argument("--test", help="labelled test file (CSV/TSV or FASTA) for a classifier")
    p.add_argument("--label-regex", default="", help="regex with one group picking the label from FASTA headers")
    p.add_argument("--genome", default="", help="genome for a language model's bits per base (default: bundled)")
    p.add_argument("--window-bp", type=int, default=256, help="window length in bases")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per batch")
    p.add_argument("--out", default="runs/evaluate", help="folder for evaluation.json and the confusion matrix")

    p = sub.add_parser("embed", help="per-sequence (and per-position) embeddings of a FASTA or table")
    p.add_argument("checkpoint", help="save_pretrained folder (a MambaLM, or a classifier's backbone)")
    p.add_argument("input", help="FASTA, or CSV/TSV with a 'sequence' column (optional 'name', 'label')")
    p.add_argument("--out", default="runs/embed", help="output folder (embeddings.npy, index.tsv)")
    p.add_argument("--pooling", default="mean", choices=("mean", "last", "cls"), help="pooling of positions")
    p.add_argument("--per-position", action="store_true", help="also write per_position.npy")
    p.add_argument("--label-regex", default="", help="regex with one group taking a label from FASTA names")
    p.add_argument("--max-length-bp", type=int, help="truncate sequences to this many bases")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per batch")
    p.add_argument("--chunk-bp", type=int, metavar="INT", help="run long sequences through the model in chunks of "
                   "this many bases, carrying the state: memory grows with the chunk, not the sequence; same output")

    p = sub.add_parser("generate", help="sample DNA from a prompt with the recurrent step; writes FASTA")
    p.add_argument("checkpoint", help="save_pretrained MambaLM folder")
    p.add_argument("--prompt", default="ACGT", help="DNA to continue")
    p.add_argument("--num", type=int, default=1, help="number of sequences")
    p.add_argument("--length-bp", type=int, default=200, help="bases to generate after the prompt")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0 = greedy)")
    p.add_argument("--top-k", type=int, help="sample among the k most likely bases")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", default="runs/generate/generated.fa", help="output FASTA")

    p = sub.add_parser("probe", help="cross-validated logistic regression on embeddings + PCA scatter")
    p.add_argument("embeddings", help="folder written by `mambadna embed` (labels from index.tsv)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    p.add_argument("--out", help="folder for probe.json and pca.png (default: the embeddings folder)")

    p = sub.add_parser("demo", help="pretrain + fine-tune + embed on the bundled DNA, a few CPU minutes")
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--quick", action="store_true", help="a handful of steps only (a smoke run, not a result)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def _run_config(args, finetune: bool):
    from mambadna.tasks import run_config as rc

    cfg = rc.FinetuneConfig() if finetune else rc.PretrainConfig()
    if args.recipe:
        cfg = rc.load_recipe(cfg, args.recipe)
    sets = [f"{key}={getattr(args, flag)}" for flag, key in SHORTCUTS.items() if getattr(args, flag, None) is not None]
    if args.out:
        sets.append(f"out_dir={args.out}")
    if args.activation_checkpointing:
        sets.append("train.activation_checkpointing=true")
    if args.compile:
        sets.append("train.compile=true")
    if args.no_progress:
        sets.append("train.progress_bar=false")
    if finetune and args.freeze_backbone:
        sets.append("freeze_backbone=true")
    if not finetune and args.tbptt:
        sets.append("train.tbptt=true")
    return rc.apply_overrides(cfg, sets + args.overrides)


def _print_summary(title: str, summary: dict) -> None:
    print(f"\n{title}")
    for key, value in summary.items():
        if key != "confusion_matrix":
            print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")


def _cmd_train(args, finetune: bool) -> int:
    from mambadna.tasks.train import run_finetune, run_pretrain

    cfg = _run_config(args, finetune)
    summary = (run_finetune if finetune else run_pretrain)(cfg, resume=args.resume)
    _print_summary("fine-tuning done" if finetune else "pretraining done", summary)
    return 0


def _cmd_evaluate(args) -> int:
    from mambadna.tasks import run_config as rc
    from mambadna.tasks.evaluate import evaluate

    data = rc.DataSpec(manifest=args.manifest or "", train=args.test or "", test=args.test or "",
                       label_regex=args.label_regex, window_bp=args.window_bp, batch_size=args.batch_size)
    cfg = rc.FinetuneConfig(out_dir=args.out, data=data)
    _print_summary("evaluation", evaluate(args.checkpoint, cfg, genome=args.genome))
    return 0


def _cmd_embed(args) -> int:
    from mambadna.tasks.embed import embed_records, load_lm, read_records, write_embeddings

    model = load_lm(args.checkpoint)
    records = read_records(args.input, label_regex=args.label_regex)
    pooled, positions = embed_records(model, records, args.pooling, args.per_position, args.batch_size,
                                      args.max_length_bp, chunk_bp=args.chunk_bp)
    files = write_embeddings(args.out, records, pooled, positions)
    _print_summary(f"embedded {len(records)} sequences (d = {pooled.shape[1]})", files)
    return 0


def _cmd_generate(args) -> int:
    from mambadna.tasks.embed import load_lm
    from mambadna.tasks.generate import generate_fasta

    seqs = generate_fasta(load_lm(args.checkpoint), args.prompt, args.out, args.num, args.length_bp,
                          args.temperature, args.top_k, args.seed)
    print(f"wrote {len(seqs)} sequence(s) of {len(seqs[0])} bp to {args.out}")
    return 0


def _cmd_probe(args) -> int:
    from mambadna.tasks.embed import read_embeddings
    from mambadna.tasks.plots import plot_pca
    from mambadna.tasks.probe import probe_embeddings

    vectors, labels = read_embeddings(args.embeddings)
    result = probe_embeddings(vectors, labels, args.folds)
    out = Path(args.out or args.embeddings)
    out.mkdir(parents=True, exist_ok=True)
    plot_pca(vectors, labels, out / "pca.png")
    (out / "probe.json").write_text(json.dumps(result, indent=2) + "\n")
    _print_summary("linear probe (cross-validated logistic regression)", {**result, "pca": str(out / "pca.png")})
    return 0


def _cmd_demo(args) -> int:
    from mambadna.demo import run_demo

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
    "demo": _cmd_demo,
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
