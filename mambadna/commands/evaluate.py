"""Evaluating a saved model on held-out data: a classifier's accuracy / macro-F1 / confusion matrix, or a language
model's bits per base on a genome's test split."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl

from mambadna.checkpoint import load
from mambadna.model import MambaClassifier, MambaLM
from mambadna.tasks.classify import ClassifyTask
from mambadna.commands.defaults import default_pretrain_genome
from mambadna.tasks.lm import LMTask
from mambadna.run_config import FinetuneConfig, MaskingSpec, OptimSpec
from mambadna.commands.train import finetune_datamodule, memory_advice, test_classifier
from mambadna.tokenizer import tokenizer_from_name


def _trainer(progress_bar: bool) -> pl.Trainer:
    return pl.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=progress_bar,
                      enable_model_summary=False, enable_checkpointing=False)


def evaluate(checkpoint: str | Path, cfg: FinetuneConfig, genome: str = "", progress_bar: bool = True) -> dict:
    """Metrics of the model in `checkpoint` (a save_pretrained folder). Classifiers use `cfg.data` (manifest or
    labelled files; default the bundled species windows), language models `genome` (default: bundled genomes).
    `cfg.train.chunk_bp` runs each window in chunks carrying the state (million-base windows in bounded memory)."""
    directory = Path(checkpoint)
    try:
        model = load(directory)
    except FileNotFoundError as err:
        raise ValueError(str(err)) from None
    kind = type(model).__name__
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(model, MambaClassifier):
        datamodule = finetune_datamodule(cfg, tokenizer_from_name(model.config.tokenizer))
        if datamodule.num_classes != model.num_classes:
            raise ValueError(f"{directory} predicts {model.num_classes} classes but the data has "
                             f"{datamodule.num_classes}: {datamodule.class_names}")
        task = ClassifyTask(model, OptimSpec(), datamodule.class_names, chunk_bp=cfg.train.chunk_bp)
        metrics = test_classifier(_trainer(progress_bar), task, datamodule, out_dir)
    elif isinstance(model, MambaLM):
        from mambadna.data import GenomeDataModule

        d = cfg.data
        objective = "clm" if model.config.causal else "mlm"  # a non-causal LM is scored on masked bases
        datamodule = GenomeDataModule(genome or str(default_pretrain_genome(out_dir)), window_bp=d.window_bp,
                                      batch_size=d.batch_size, test_windows=d.test_windows,
                                      tokenizer=tokenizer_from_name(model.config.tokenizer),
                                      masking=MaskingSpec().as_tuple() if objective == "mlm" else None)
        with memory_advice():
            results = _trainer(progress_bar).test(LMTask(model.config, OptimSpec(), model=model,
                                                         chunk_bp=cfg.train.chunk_bp, objective=objective),
                                                  datamodule=datamodule, verbose=False)
        metrics = {k: float(v) for k, v in results[0].items()}
    else:
        raise ValueError(f"{directory} holds a {kind}; evaluate knows MambaLM and MambaClassifier")
    metrics = {"checkpoint": str(directory), "model_class": kind, **metrics}
    (out_dir / "evaluation.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
