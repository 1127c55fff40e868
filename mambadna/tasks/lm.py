"""Causal language-model pretraining: next-base cross-entropy, reported in bits per base and perplexity."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from mambadna.config import MambaConfig
from mambadna.model import MambaLM
from mambadna.tasks.memory import enable_activation_checkpointing, maybe_compile
from mambadna.tasks.optim import build_optimizer
from mambadna.tasks.run_config import OptimSpec
from mambadna.tokenizer import tokenizer_from_name

IGNORE = -100


def next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    pad_id: int) -> torch.Tensor:
    """Mean cross-entropy (nats) of predicting input_ids[:, 1:] from logits[:, :-1]; pad/masked targets ignored.

    logits (b, l, V), input_ids (b, l), attention_mask (b, l) or None."""
    targets = input_ids[:, 1:].clone()  # (b, l-1)
    targets[targets == pad_id] = IGNORE
    if attention_mask is not None:
        targets[~attention_mask[:, 1:].bool()] = IGNORE
    pred = logits[:, :-1].float()  # (b, l-1, V); fp32 for a stable softmax under bf16
    return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)


class LMTask(pl.LightningModule):
    """Wraps a MambaLM; `self.model` is a plain MambaLM (save it with `save_pretrained`)."""

    def __init__(self, config: MambaConfig, optim: OptimSpec, activation_checkpointing: bool = False,
                 compile: bool = False, model: MambaLM | None = None):
        super().__init__()
        self.model = model if model is not None else MambaLM(config)
        self.optim = optim
        self.pad_id = tokenizer_from_name(self.model.config.tokenizer).pad_id
        if activation_checkpointing:
            enable_activation_checkpointing(self.model.layers)
        # kept off the module tree so state_dict keys stay those of MambaLM
        object.__setattr__(self, "_forward", maybe_compile(self.model, compile))

    def loss(self, batch: dict) -> torch.Tensor:
        input_ids = batch["input_ids"]
        logits = self._forward(input_ids)  # (b, l, V)
        return next_token_loss(logits, input_ids, batch.get("attention_mask"), self.pad_id)

    def _log_metrics(self, split: str, loss: torch.Tensor, batch_size: int) -> None:
        on_step = split == "train"
        kw = dict(on_step=on_step, on_epoch=not on_step, batch_size=batch_size, sync_dist=not on_step)
        self.log(f"{split}/loss", loss, prog_bar=True, **kw)
        self.log(f"{split}/bits_per_base", loss / math.log(2), **kw)
        if not on_step:
            self.log(f"{split}/perplexity", torch.exp(loss), **kw)

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self._log_metrics("train", loss, batch["input_ids"].shape[0])
        self.log("train/window_bp", float(batch["input_ids"].shape[1]), on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self._log_metrics("val", loss, batch["input_ids"].shape[0])
        return loss

    def test_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self._log_metrics("test", loss, batch["input_ids"].shape[0])
        return loss

    def configure_optimizers(self):
        return build_optimizer(self.model, self.optim, int(self.trainer.max_steps))
