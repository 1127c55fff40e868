"""Training callbacks: sequence-length warmup, a stop on non-finite loss, and the run's speed and memory."""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from mambadna.tasks.checkpoints import point_last_at, step_checkpoints
from mambadna.tokenizer import PAD_ID


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
    """Stops before a NaN/inf loss is back-propagated, and names the checkpoint to continue from.

    The loss at step g is computed with the weights checkpointed as step g, so when it is not finite that
    checkpoint (and any later one) holds weights that give NaN at once: they are moved to `checkpoints/nonfinite/`
    and the message names the newest earlier checkpoint, whose weights and loss were both finite, so that
    `--resume` (with the lower learning rate the message suggests) continues from a good state."""

    def __init__(self, checkpoint_dir: str | Path | None = None, continue_with: str = "", lr: float | None = None):
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.continue_with, self.lr = continue_with, lr

    def _set_aside(self, step: int) -> tuple[Path | None, list[Path]]:
        """(newest good checkpoint, checkpoints moved aside) for a non-finite loss at `step`."""
        if self.checkpoint_dir is None or not self.checkpoint_dir.is_dir():
            return None, []
        found = step_checkpoints(self.checkpoint_dir)
        if not found:  # checkpoints of another naming scheme (tests, older runs): newest by time
            others = sorted(self.checkpoint_dir.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
            return (others[-1] if others else None), []
        good = [p for s, p in found if s < step]
        moved = []
        bad_dir = self.checkpoint_dir / "nonfinite"
        for s, path in found:
            if s >= step:
                bad_dir.mkdir(exist_ok=True)
                moved.append(path.rename(bad_dir / path.name))
        point_last_at(self.checkpoint_dir, good[-1] if good else None)
        return (good[-1] if good else None), moved

    def on_before_backward(self, trainer, pl_module, loss):
        if torch.isfinite(loss.detach()).all():
            return
        step = trainer.global_step
        good, moved = self._set_aside(step) if trainer.is_global_zero else (None, [])
        aside = f" (the checkpoint of step {step}, whose weights gave it, is moved to nonfinite/)" if moved else ""
        lower = f" --lr {self.lr / 10:g}" if self.lr else ""
        if good is not None:
            how = f"continue with: {self.continue_with}{lower}" if self.continue_with else "resume with --resume"
            where = f"the newest checkpoint whose weights and loss were finite is {good}{aside}; {how}"
        else:
            where = f"no checkpoint with finite weights and loss was saved{aside}; start afresh with --overwrite"
        raise NonFiniteLossError(f"loss became {loss.item()} at step {step}; stopped; {where} (a lower optim.lr, "
                                 "optim.grad_clip or train.precision=32-true keep it finite)")


class RunStats(pl.Callback):
    """Wall time, bases per second and peak GPU memory of the training loop (this process's fit)."""

    def __init__(self):
        self.train_s = 0.0
        self._start: float | None = None
        self._bases = None

    def on_train_start(self, trainer, pl_module):
        self._start, self._bases = time.perf_counter(), None
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.strategy.root_device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        ids = batch["input_ids"]
        real = batch["attention_mask"].sum() if "attention_mask" in batch else (ids != PAD_ID).sum()
        # kept on the device: reading it every step would make the GPU wait
        self._bases = real.detach() if self._bases is None else self._bases + real.detach()

    def on_train_end(self, trainer, pl_module):
        if self._start is not None:
            self.train_s = time.perf_counter() - self._start

    def summary(self, trainer: pl.Trainer) -> dict:
        bases = 0 if self._bases is None else self._bases
        if torch.is_tensor(bases):
            if trainer.world_size > 1:
                bases = trainer.strategy.reduce(bases.float(), reduce_op="sum")
            bases = int(bases.item())
        device = trainer.strategy.root_device
        on_gpu = device.type == "cuda"
        return {
            "device": torch.cuda.get_device_name(device) if on_gpu else device.type,
            "train_time_s": round(self.train_s, 2),
            "bases_trained": bases,
            "bases_per_s": round(bases / self.train_s, 1) if self.train_s > 0 else None,
            # None on the CPU: there is no GPU memory to report (the summary says so in words)
            "peak_gpu_memory_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if on_gpu else None,
        }
