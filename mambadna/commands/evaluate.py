"""Evaluating a saved model on held-out data: a classifier's accuracy / macro-F1 / confusion matrix, beside a k-mer
+ logistic-regression baseline scored on the same test windows, or a language model's bits per base on a genome's
test split beside an order-3 Markov chain's (fitted on the training split) on the same windows.

A classifier's classes are matched by name, never by position: the test data may list its classes in another
order or hold only some of them, and a label the model never saw is refused by name."""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl

from mambadna.checkpoint import load
from mambadna.commands.configs import EvaluateConfig
from mambadna.commands.probe import (KMER, KMER_KS, KMER_TRAIN_WINDOWS, MARKOV_ORDER, kmer_baseline,
                                     kmer_cross_validated, markov_bits_per_base)
from mambadna.commands.run_dir import out_folder, refuse_existing
from mambadna.commands.train import TRAINING_INFO, TaskWarning, check_accelerator, memory_advice, test_classifier
from mambadna.data import SpeciesDataModule
from mambadna.files import lock_folder, release_folder, write_json
from mambadna.hf import locate
from mambadna.model import MambaClassifier, MambaLM
from mambadna.run_config import MaskingSpec, OptimSpec, RuntimeSpec
from mambadna.tasks.classify import ClassifyTask
from mambadna.tasks.lm import LMTask
from mambadna.threads import configure_torch_threads
from mambadna.tokenizer import tokenizer_from_name


def _trainer(runtime: RuntimeSpec, progress_bar: bool = True) -> pl.Trainer:
    import torch

    check_accelerator(runtime)
    return pl.Trainer(accelerator=runtime.accelerator, devices=runtime.lightning_devices(),
                      precision=runtime.lightning_precision(torch.cuda.is_available()), logger=False,
                      enable_progress_bar=progress_bar, enable_model_summary=False, enable_checkpointing=False)


def label_map(model: MambaClassifier, data_classes: list[str], where: str) -> list[int]:
    """The model's class index of each of the data's classes, by name."""
    names = model.class_names
    if names is None:  # saved before classifiers kept their names: positions are all there is
        if len(data_classes) != model.num_classes:
            raise ValueError(f"{where} predicts {model.num_classes} classes (names not saved) but the data has "
                             f"{len(data_classes)}: {data_classes}")
        warnings.warn(f"{where} was saved without class names; matching the data's classes {data_classes} by "
                      "sorted position", TaskWarning, stacklevel=2)
        return list(range(model.num_classes))
    unseen = [c for c in data_classes if c not in names]
    if unseen:
        raise ValueError(f"the test data has label(s) {unseen} that {where} was never trained on (its classes: "
                         f"{names}); evaluate on data with those classes only")
    return [names.index(c) for c in data_classes]


def kmer_on_test_windows(datamodule, folds: int = 5) -> dict:
    """The k-mer + logistic-regression baseline on the test windows the model was just scored on
    (mambadna/commands/probe.py): fitted on up to KMER_TRAIN_WINDOWS training windows of a species manifest (the
    test windows of a genome's held-out block overlap, so cross-validating on them would flatter it), or
    cross-validated on a labelled test file's sequences. Data it cannot use says so instead of failing."""
    sequences, labels = datamodule.raw_split("test")
    try:
        if isinstance(datamodule, SpeciesDataModule):
            train_seqs, train_labels = datamodule.raw_split("train", KMER_TRAIN_WINDOWS)
            scores = kmer_baseline(train_seqs, train_labels, sequences, labels)
            return {**{f"{KMER}/{k}": v for k, v in scores.items()}, f"{KMER}/k": ",".join(map(str, KMER_KS)),
                    f"{KMER}/fitted_on": f"{len(train_seqs)} training windows"}
        return {**kmer_cross_validated(sequences, labels, folds),
                f"{KMER}/fitted_on": "the test sequences, cross-validated"}
    except ValueError as err:
        return {KMER: f"not computed: {err}"}


def trained_window_bp(checkpoint) -> int | None:
    """The window a saved model was trained on (its training.json, written by pretrain / finetune), if known."""
    try:  # a model that cannot be read is named by the load that follows
        window = json.loads((locate(checkpoint) / TRAINING_INFO).read_text()).get("window_bp")
    except (OSError, ValueError, AttributeError):
        return None
    return int(window) if isinstance(window, int) and window > 0 else None


def run(cfg: EvaluateConfig) -> dict:
    """Metrics of the model in cfg.checkpoint (a save_pretrained folder). Classifiers are tested on cfg.data's
    manifest or labelled --test file (default: the bundled species windows), language models on the test split of
    data.genome (default: the bundled genomes), data.test_windows windows of data.window_bp. `cfg.chunk_bp` runs
    each window in chunks carrying the state (million-base windows in bounded memory).

    The window is the one the model was trained on (its training.json) unless data.window_bp was set to another
    value than the default; evaluation.json records it and where it came from. --out is held while it runs."""
    configure_torch_threads()
    out_dir = out_folder(cfg.out_dir)
    refuse_existing([out_dir / "evaluation.json"], cfg.overwrite)
    trained = trained_window_bp(cfg.checkpoint)
    chosen = cfg.data.window_bp != EvaluateConfig().data.window_bp
    source = "--window-bp" if chosen else "the model's training.json" if trained else "the default"
    if trained and not chosen:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, window_bp=trained))
    lock_folder(out_dir, "evaluate")
    try:
        return _evaluate(cfg, out_dir, {"window_bp": cfg.data.window_bp, "window_from": source})
    finally:
        release_folder(out_dir)


def _evaluate(cfg: EvaluateConfig, out_dir: Path, window: dict) -> dict:
    started = time.perf_counter()
    directory = Path(cfg.checkpoint)
    try:
        model = load(directory)
    except FileNotFoundError as err:
        raise ValueError(str(err)) from None
    kind = type(model).__name__
    d = cfg.data
    if isinstance(model, MambaClassifier):
        if d.genome:
            raise ValueError(f"--genome is for language models; {directory} holds a classifier: give its test data "
                             "with --manifest or --test")
        datamodule = d.datamodule("classify", tokenizer_from_name(model.config.tokenizer), out_dir, min_classes=1)
        mapping = label_map(model, datamodule.class_names, str(directory))
        names = model.class_names or datamodule.class_names
        task = ClassifyTask(model, OptimSpec(), names, label_map=mapping, chunk_bp=cfg.chunk_bp)
        out_dir.mkdir(parents=True, exist_ok=True)
        metrics = test_classifier(_trainer(cfg.runtime), task, datamodule, out_dir)
        metrics = {"classes": names, "test_classes": datamodule.class_names, **metrics,
                   **kmer_on_test_windows(datamodule)}
    elif isinstance(model, MambaLM):
        if d.manifest or d.test:
            raise ValueError(f"--manifest / --test are for classifiers; {directory} holds a language model: give its "
                             "test genome with --genome")
        out_dir.mkdir(parents=True, exist_ok=True)
        objective = "clm" if model.config.causal else "mlm"  # a non-causal LM is scored on masked bases
        datamodule = d.datamodule("lm", tokenizer_from_name(model.config.tokenizer), out_dir,
                                  masking=MaskingSpec().as_tuple() if objective == "mlm" else None)
        with memory_advice():
            results = _trainer(cfg.runtime).test(
                LMTask(model.config, OptimSpec(), model=model, chunk_bp=cfg.chunk_bp, objective=objective),
                datamodule=datamodule, verbose=False)
        metrics = {k: float(v) for k, v in results[0].items()}
        train_windows = datamodule.raw_split("train", KMER_TRAIN_WINDOWS)
        metrics[f"{KMER}/bits_per_base"] = markov_bits_per_base(train_windows, datamodule.raw_split("test"))
        metrics[f"{KMER}/fitted_on"] = f"order-{MARKOV_ORDER} Markov chain, {len(train_windows)} training windows"
    else:
        raise ValueError(f"{directory} holds a {kind}; evaluate knows MambaLM and MambaClassifier")
    metrics = {"checkpoint": str(directory), "model_class": kind, **window, **metrics,
               "wall_time_s": round(time.perf_counter() - started, 2)}
    write_json(out_dir / "evaluation.json", metrics)
    return metrics
