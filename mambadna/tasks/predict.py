"""Lightning's predict loop as a way to spread inference over devices: one process per device, each running a
function over its share of the batches (Lightning's distributed sampler deals them out). The function writes its
own results (e.g. rows of a memory-mapped file), so nothing is gathered between processes."""

from __future__ import annotations

from typing import Callable

import pytorch_lightning as pl
import torch


class PredictTask(pl.LightningModule):
    """Runs `fn(batch, device)` for every batch this process is dealt; `model` is moved to the process's device."""

    def __init__(self, model: torch.nn.Module, fn: Callable):
        super().__init__()
        self.model = model
        object.__setattr__(self, "_fn", fn)  # a plain callable, kept off the module tree

    def predict_step(self, batch, batch_idx):
        self._fn(batch, self.device)
        return None
