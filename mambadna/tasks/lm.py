"""Language-model pretraining: next-base ("clm") or masked-base ("mlm") cross-entropy.

clm reports bits per base and perplexity; mlm, the objective of the bidirectional and RC-equivariant models,
reports bits per masked base and masked-token accuracy (the fraction of masked bases whose most likely id is the
right one), both over the masked positions. One loss path (mambadna/objective.py) for the three ways through a
batch: the plain forward (optionally with per-block activation checkpointing or torch.compile); `chunk_bp`, which
runs each window chunk-major through all layers with recomputation (exact; causal models); and `tbptt`, where
batches are consecutive windows of contig streams (`mambadna.data.ContigStreams`) and a `TBPTTRunner` carries
each stream's state from step to step (causal models, clm).
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch

from mambadna.chunking import check_chunk_bp
from mambadna.config import MambaConfig
from mambadna.model import MambaLM
from mambadna.objective import check_objective, token_scores
from mambadna.run_config import OptimSpec
from mambadna.tasks.optim import build_optimizer
from mambadna.tbptt import TBPTTRunner
from mambadna.tokenizer import IGNORE_INDEX


class LMTask(pl.LightningModule):
    """Wraps a MambaLM; `self.model` is a plain MambaLM (save it with `save_pretrained`). `objective` is "clm" or
    "mlm" (the batches must match: next-base or masked targets, see mambadna.data.GenomeDataModule's `masking`).

    `chunk_bp` and `activation_checkpointing` are mutually exclusive (the run config says so first); with `tbptt`
    every batch must be a `ContigStreams` item and `chunk_bp` additionally bounds the memory of each window."""

    def __init__(self, config: MambaConfig, optim: OptimSpec, activation_checkpointing: bool = False,
                 compile: bool = False, model: MambaLM | None = None, chunk_bp: int | None = None,
                 tbptt: bool = False, objective: str = "clm"):
        super().__init__()
        if activation_checkpointing and (chunk_bp or tbptt):
            raise ValueError("activation_checkpointing does not combine with chunk_bp or tbptt: those run the layers "
                             "with carried state, and chunk_bp already recomputes each chunk in the backward")
        self.model = model if model is not None else MambaLM(config)
        check_objective(self.model.config, objective)
        if chunk_bp is not None:
            check_chunk_bp(chunk_bp, self.model.config)
        if tbptt and objective != "clm":
            raise ValueError("tbptt trains next-base prediction over consecutive windows; it needs objective 'clm'")
        self.model.activation_checkpointing = activation_checkpointing
        self.optim = optim
        self.lr_scale = None  # step -> lr factor, set by the command (optim.lr_full_windows)
        self.chunk_bp, self.tbptt, self.objective = chunk_bp, tbptt, objective
        # one runner per stream set: validation between training steps must not disturb the training streams
        self.runners = {"train": TBPTTRunner(), "val": TBPTTRunner()} if tbptt else {}
        # kept off the module tree so state_dict keys stay those of MambaLM
        object.__setattr__(self, "_scores", torch.compile(token_scores) if compile else token_scores)

    def scores(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean loss over the scored positions, their count, how many were predicted right) of a batch with
        aligned {"input_ids", "targets"[, "attention_mask"]}."""
        loss_sum, n_correct, n_tokens, _ = self._scores(self.model, batch["input_ids"], batch["targets"],
                                                        self.chunk_bp, None, batch.get("attention_mask"))
        return loss_sum / n_tokens.clamp_min(1), n_tokens, n_correct

    def loss(self, batch: dict) -> torch.Tensor:
        """Mean loss of a batch with aligned {"input_ids", "targets"}."""
        return self.scores(batch)[0]

    def _log_metrics(self, split: str, loss: torch.Tensor, batch_size: int, accuracy=None) -> None:
        on_step = split == "train"
        kw = dict(on_step=on_step, on_epoch=not on_step, batch_size=batch_size, sync_dist=not on_step)
        self.log(f"{split}/loss", loss, prog_bar=True, **kw)
        if self.objective == "mlm":
            self.log(f"{split}/bits_per_masked_base", loss / math.log(2), **kw)
            self.log(f"{split}/masked_accuracy", accuracy, **kw)
            return
        self.log(f"{split}/bits_per_base", loss / math.log(2), **kw)
        if not on_step:
            self.log(f"{split}/perplexity", torch.exp(loss), **kw)

    def _step(self, split: str, batch: dict) -> torch.Tensor:
        accuracy = None
        if split in self.runners:
            loss = self.runners[split].step(self.model, batch, self.chunk_bp)
            # a stream's last window is mostly padding: weight the epoch mean by scored bases, not by rows
            weight = max(1, int((batch["targets"] != IGNORE_INDEX).sum()))
        elif self.objective == "mlm":
            loss, n_tokens, n_correct = self.scores(batch)
            # the number of masked bases varies from batch to batch: weight the epoch means by it
            weight = max(1, int(n_tokens))
            accuracy = n_correct.float() / weight
        else:
            loss = self.loss(batch)
            weight = batch["input_ids"].shape[0]
        self._log_metrics(split, loss, weight, accuracy)
        return loss

    def on_train_epoch_start(self):
        if "train" in self.runners:
            self.runners["train"].reset()

    def on_validation_epoch_start(self):
        if "val" in self.runners:
            self.runners["val"].reset()

    def training_step(self, batch, batch_idx):
        loss = self._step("train", batch)
        self.log("train/window_bp", float(batch["input_ids"].shape[1]), on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        return self._step("val", batch)

    def test_step(self, batch, batch_idx):
        return self._step("test", batch)

    def configure_optimizers(self):
        return build_optimizer(self.model, self.optim, int(self.trainer.max_steps), self.lr_scale)
