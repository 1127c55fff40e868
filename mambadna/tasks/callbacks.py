"""Training callbacks: sequence-length warmup and a stop on non-finite loss."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch


class NonFiniteLossError(ValueError):
    """The loss became NaN/inf; the message names the step and the last good checkpoint."""


def doubling_stages(start_bp: int, window_bp: int, batch_size: int, epochs_per_stage: int = 1):
    """Mamba paper warmup: windows start_bp, 2*start_bp, ... up to window_bp, each stage `epochs_per_stage`
    epochs, with the batch scaled so window * batch (tokens per step) stays that of the final stage.
    Returns [(window_bp, batch_size, epochs), ...]; the last stage has epochs None (until the end)."""
    if start_bp < 1 or start_bp > window_bp:
        raise ValueError(f"sequence-length warmup must start at 1..window_bp ({window_bp}) bp, got {start_bp}")
    tokens = window_bp * batch_size
    stages, window = [], start_bp
    while window < window_bp:
        stages.append((window, max(1, tokens // window), epochs_per_stage))
        window *= 2
    stages.append((window_bp, batch_size, None))
    return stages


class SeqLenWarmup(pl.Callback):
    """Walks the datamodule through `stages` [(window_bp, batch_size, epochs), ...] by calling its
    `set_window(window_bp, batch_size)`. Needs Trainer(reload_dataloaders_every_n_epochs=1): Lightning builds the
    next epoch's loader before on_train_epoch_start, so the change is made at the end of the previous epoch (and at
    fit start, for the first epoch or a resumed one). The stage is a function of the epoch, so resume restores it."""

    def __init__(self, stages):
        if not stages:
            raise ValueError("SeqLenWarmup needs at least one stage")
        self.stages = [(int(w), int(b), None if e is None else int(e)) for w, b, e in stages]
        self._resumed_epoch: int | None = None

    def stage_at(self, epoch: int) -> tuple[int, int]:
        start = 0
        for window, batch, epochs in self.stages:
            if epochs is None or epoch < start + epochs:
                return window, batch
            start += epochs
        return self.stages[-1][:2]

    def _apply(self, trainer: pl.Trainer, epoch: int) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "set_window"):
            raise ValueError("sequence-length warmup needs a datamodule with set_window(window_bp, batch_size)")
        datamodule.set_window(*self.stage_at(epoch))

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        # Lightning restores the loops (current_epoch) only after on_fit_start, so remember the epoch here
        self._resumed_epoch = int(checkpoint.get("epoch", 0))

    def on_fit_start(self, trainer, pl_module):
        epoch = self._resumed_epoch if self._resumed_epoch is not None else trainer.current_epoch
        self._apply(trainer, epoch)

    def on_train_epoch_end(self, trainer, pl_module):
        self._apply(trainer, trainer.current_epoch + 1)


class NonFiniteLossGuard(pl.Callback):
    """Stops before a NaN/inf loss is back-propagated, so the weights and checkpoints stay good."""

    def __init__(self, checkpoint_dir: str | Path | None = None):
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None

    def on_before_backward(self, trainer, pl_module, loss):
        if torch.isfinite(loss.detach()).all():
            return
        last = None
        if self.checkpoint_dir is not None and self.checkpoint_dir.is_dir():
            found = sorted(self.checkpoint_dir.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
            last = found[-1] if found else None
        where = f"last good checkpoint: {last} (resume with --resume)" if last else "no checkpoint was saved yet"
        raise NonFiniteLossError(f"loss became {loss.item()} at step {trainer.global_step}; stopped; {where}. "
                                 "Try a lower optim.lr, optim.grad_clip, or train.precision=32-true")
