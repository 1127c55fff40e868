"""`mambadna demo`: the whole pipeline on the bundled real DNA in a few CPU minutes.

1. pretrain a tiny Mamba LM (next-base prediction) on the four bundled genomes' training blocks;
2. fine-tune it to tell which genome a window comes from (human chr17 piece, human mtDNA, orangutan mtDNA,
   phage lambda), tested on held-out blocks;
3. embed the test windows with the pretrained model and probe them (logistic regression, PCA picture);
4. compare with a k-mer (k = 4..6) frequency + logistic-regression baseline on the same windows.
"""

from __future__ import annotations

import time
from pathlib import Path

from mambadna import run_config as rc
from mambadna.commands.configs import DemoConfig
from mambadna.data.bundled import default_species_manifest
from mambadna.config import tiny
from mambadna.files import lock_folder, write_json



def _windows(manifest: Path, window_bp: int, split: str, count: int, seed: int):
    """(raw sequences, label names) of the species windows a SpeciesDataModule would give for `split`."""
    from mambadna.data import SpeciesWindowDataset

    return SpeciesWindowDataset(manifest, window_bp, split=split, num_windows=count, seed=seed).raw_windows()


def demo_pretrain(out_dir: str) -> rc.PretrainConfig:
    """Seconds-scale pretraining of a tiny model on the bundled genomes (the laptop demo)."""
    return rc.PretrainConfig(
        out_dir=out_dir,
        model=tiny(d_model=32, n_layer=2, d_state=8),
        data=rc.DataSpec(window_bp=256, batch_size=16, val_windows=32),
        optim=rc.OptimSpec(lr=8e-3),
        train=rc.TrainSpec(max_steps=300, ckpt_every_n_steps=300, log_every_n_steps=10),
    )


def demo_finetune(out_dir: str, pretrained: str) -> rc.FinetuneConfig:
    return rc.FinetuneConfig(
        out_dir=out_dir, pretrained=pretrained, pooling="mean",
        data=rc.DataSpec(window_bp=128, batch_size=32, val_windows=64, test_windows=256),
        optim=rc.OptimSpec(lr=1e-2, weight_decay=0.01),
        train=rc.TrainSpec(max_steps=300, ckpt_every_n_steps=300, log_every_n_steps=10),
    )


def run(cfg: DemoConfig) -> dict:
    """The `mambadna demo` command; an earlier demo in cfg.out_dir is moved aside with cfg.overwrite."""
    import sys

    from mambadna.commands.run_dir import out_folder, start_run

    out = out_folder(cfg.out_dir)
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise ValueError(f"{out} already holds a demo; add --overwrite to move it aside, or choose another --out")
        moved = start_run(out, "demo", overwrite="move").moved_to
        if moved is None:  # a folder that is not a run: move it whole
            moved = out.with_name(out.name + ".old-demo")
            out.rename(moved)
        print(f"moved the earlier demo to {moved}", file=sys.stderr)
    return run_demo(out, quick=cfg.quick, progress_bar=cfg.progress_bar)


def run_demo(out_dir: str | Path = "runs/demo", quick: bool = False, progress_bar: bool = True) -> dict:
    from mambadna.commands.embed import Record, embed_records
    from mambadna.commands.embedding_io import write_embeddings
    from mambadna.commands.plots import plot_pca
    from mambadna.commands.probe import KMER_TRAIN_WINDOWS, kmer_baseline, probe_embeddings
    from mambadna.commands import finetune, pretrain
    from mambadna.model import MambaLM

    out_dir = lock_folder(out_dir, "demo")
    start = time.time()
    pre = demo_pretrain(str(out_dir / "pretrain"))
    ft = demo_finetune(str(out_dir / "finetune"), str(out_dir / "pretrain" / "model"))
    if quick:
        pre = rc.apply_overrides(pre, ["train.max_steps=3", "data.val_windows=16", "train.log_every_n_steps=1"])
        ft = rc.apply_overrides(ft, ["train.max_steps=3", "data.val_windows=16", "data.test_windows=32",
                                     "train.log_every_n_steps=1"])
    for cfg in (pre, ft):
        cfg.train.progress_bar = progress_bar

    print(f"[1/4] pretraining a tiny Mamba ({pre.model.d_model} wide, {pre.model.n_layer} layers) on the bundled "
          f"genomes, {pre.train.max_steps} steps")
    pre_summary = pretrain.run(pre)
    t_pre = time.time() - start
    print(f"[2/4] fine-tuning a genome-of-origin classifier, {ft.train.max_steps} steps")
    ft_summary = finetune.run(ft)
    t_ft = time.time() - start - t_pre

    print("[3/4] embedding the test windows and probing them")
    manifest = default_species_manifest(ft.out_dir)
    window, test_n = ft.data.window_bp, ft.data.test_windows
    test_seqs, test_labels = _windows(manifest, window, "test", test_n, ft.train.seed)
    records = [Record(f"test{i}", s, lab) for i, (s, lab) in enumerate(zip(test_seqs, test_labels))]
    lm = MambaLM.from_pretrained(pre_summary["model_dir"])
    pooled, _ = embed_records(lm, records, pooling="mean", batch_size=64)
    embed_dir = out_dir / "embed"
    write_embeddings(embed_dir, records, pooled)
    probe = probe_embeddings(pooled, test_labels, folds=5)
    plot_pca(pooled, test_labels, out_dir / "pca.png", title="pretrained Mamba embeddings of test windows (PCA)")

    print("[4/4] k-mer frequency + logistic regression baseline")
    n_train = 64 if quick else KMER_TRAIN_WINDOWS
    train_seqs, train_labels = _windows(manifest, window, "train", n_train, ft.train.seed)
    kmer = kmer_baseline(train_seqs, train_labels, test_seqs, test_labels)

    chance = probe["chance"]
    rows = [
        ("majority class (chance)", chance, None),
        ("k-mer (k=4..6) counts + logistic regression", kmer["accuracy"], kmer["macro_f1"]),
        ("Mamba fine-tuned classifier", ft_summary.get("test/accuracy"), ft_summary.get("test/macro_f1")),
        (f"linear probe on pretrained embeddings ({probe['folds']}-fold CV)", probe["accuracy"], probe["macro_f1"]),
    ]
    total = time.time() - start
    summary = {
        "window_bp": window, "test_windows": len(test_seqs), "classes": ft_summary["classes"],
        "pretrain_val_bits_per_base": pre_summary.get("val/bits_per_base"),
        "results": [{"method": m, "accuracy": a, "macro_f1": f} for m, a, f in rows],
        "seconds": {"pretrain": round(t_pre, 1), "finetune": round(t_ft, 1), "total": round(total, 1)},
    }
    write_json(out_dir / "summary.json", summary)
    _print_table(summary, rows, out_dir)
    return summary


def _print_table(summary: dict, rows, out_dir: Path) -> None:
    bpb = summary["pretrain_val_bits_per_base"]
    print(f"\nGenome-of-origin classification of {summary['window_bp']} bp windows from held-out blocks "
          f"({summary['test_windows']} test windows; classes: {', '.join(summary['classes'])})")
    width = max(len(r[0]) for r in rows)
    print(f"  {'method':<{width}}  accuracy  macro-F1")
    for method, acc, f1 in rows:
        f1_text = f"{f1:8.3f}" if f1 is not None else "       -"
        acc_text = f"{acc:8.3f}" if acc is not None else "       -"
        print(f"  {method:<{width}}  {acc_text}  {f1_text}")
    if bpb is not None:
        print(f"  pretraining validation: {bpb:.3f} bits per base (2.0 = uniform over ACGT)")
    seconds = summary["seconds"]
    print(f"\nTook {seconds['total']:.0f} s (pretrain {seconds['pretrain']:.0f} s, fine-tune {seconds['finetune']:.0f} s)."
          f"\nOutputs in {out_dir}/: pretrain/curves.png, finetune/curves.png, finetune/confusion_matrix.png "
          f"(+ .csv), pca.png, embed/, pretrain/model/, finetune/model/, summary.json")
