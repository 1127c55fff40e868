"""Causal language-model pretraining: next-base cross-entropy, reported in bits per base and perplexity.

Three ways through a batch, one loss: the plain forward (optionally with per-block activation checkpointing or
torch.compile); `chunk_bp`, which runs each window chunk-major through all layers with recomputation
(`mambadna.long_context.chunked_lm_loss`, exact); and `tbptt`, where batches are consecutive windows of contig
streams (`mambadna.data.ContigStreams`) and a `TBPTTRunner` carries each stream's state from step to step.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from mambadna.config import MambaConfig
from mambadna.long_context import IGNORE_INDEX as IGNORE
from mambadna.long_context import chunked_lm_loss
from mambadna.model import MambaLM
from mambadna.tasks.memory import enable_activation_checkpointing, maybe_compile
from mambadna.tasks.optim import build_optimizer
from mambadna.tasks.run_config import OptimSpec
from mambadna.tbptt import TBPTTRunner
from mambadna.tokenizer import tokenizer_from_name


def next_token_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, pad_id: int) -> torch.Tensor:
    """input_ids (b, l) with pad and masked positions set to IGNORE (b, l): what position t-1 is scored against."""
    labels = input_ids.clone()
    labels[labels == pad_id] = IGNORE
    if attention_mask is not None:
        labels[~attention_mask.bool()] = IGNORE
    return labels


def next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    pad_id: int) -> torch.Tensor:
    """Mean cross-entropy (nats) of predicting input_ids[:, 1:] from logits[:, :-1]; pad/masked targets ignored.

    logits (b, l, V), input_ids (b, l), attention_mask (b, l) or None."""
    targets = next_token_labels(input_ids, attention_mask, pad_id)[:, 1:]  # (b, l-1)
    pred = logits[:, :-1].float()  # (b, l-1, V); fp32 for a stable softmax under bf16
    return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)


class LMTask(pl.LightningModule):
    """Wraps a MambaLM; `self.model` is a plain MambaLM (save it with `save_pretrained`).

    `chunk_bp` and `activation_checkpointing` are mutually exclusive (the run config says so first); with `tbptt`
    every batch must be a `ContigStreams` item and `chunk_bp` additionally bounds the memory of each window."""

    def __init__(self, config: MambaConfig, optim: OptimSpec, activation_checkpointing: bool = False,
                 compile: bool = False, model: MambaLM | None = None, chunk_bp: int | None = None,
                 tbptt: bool = False):
        super().__init__()
        if activation_checkpointing and (chunk_bp or tbptt):
            raise ValueError("activation_checkpointing does not combine with chunk_bp or tbptt: those run the layers "
                             "with carried state, and chunk_bp already recomputes each chunk in the backward")
        self.model = model if model is not None else MambaLM(config)
        self.optim = optim
        self.pad_id = tokenizer_from_name(self.model.config.tokenizer).pad_id
        self.chunk_bp, self.tbptt = chunk_bp, tbptt
        # one runner per stream set: validation between training steps must not disturb the training streams
        self.runners = {"train": TBPTTRunner(IGNORE), "val": TBPTTRunner(IGNORE)} if tbptt else {}
        if activation_checkpointing:
            enable_activation_checkpointing(self.model.layers)
        # kept off the module tree so state_dict keys stay those of MambaLM
        object.__setattr__(self, "_forward", maybe_compile(self.model, compile))

    def loss(self, batch: dict) -> torch.Tensor:
        """Mean next-token loss of a window batch ({"input_ids", optional "attention_mask"})."""
        input_ids = batch["input_ids"]
        attention_mask = batch.get("attention_mask")
        if self.chunk_bp is None:
            logits = self._forward(input_ids)  # (b, l, V)
            return next_token_loss(logits, input_ids, attention_mask, self.pad_id)
        labels = next_token_labels(input_ids, attention_mask, self.pad_id)
        loss_sum, n_tokens = chunked_lm_loss(self.model, input_ids, self.chunk_bp, labels, IGNORE)
        return loss_sum / n_tokens.clamp_min(1)

    def _log_metrics(self, split: str, loss: torch.Tensor, batch_size: int) -> None:
        on_step = split == "train"
        kw = dict(on_step=on_step, on_epoch=not on_step, batch_size=batch_size, sync_dist=not on_step)
        self.log(f"{split}/loss", loss, prog_bar=True, **kw)
        self.log(f"{split}/bits_per_base", loss / math.log(2), **kw)
        if not on_step:
            self.log(f"{split}/perplexity", torch.exp(loss), **kw)

    def _step(self, split: str, batch: dict) -> torch.Tensor:
        if split in self.runners:
            loss = self.runners[split].step(self.model, batch, self.chunk_bp)
            # a stream's last window is mostly padding: weight the epoch mean by scored bases, not by rows
            weight = max(1, int((batch["targets"] != IGNORE).sum()))
        else:
            loss = self.loss(batch)
            weight = batch["input_ids"].shape[0]
        self._log_metrics(split, loss, weight)
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
        return build_optimizer(self.model, self.optim, int(self.trainer.max_steps))
