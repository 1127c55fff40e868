"""Training callbacks: the length curriculum (sequence-length warmup), a stop on non-finite loss, and the run's speed
and memory."""

from __future__ import annotations

import bisect
import itertools
import math
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from mambadna.tasks.checkpoints import point_last_at, step_checkpoints
from mambadna.tasks.progress import batch_bases


class NonFiniteLossError(ValueError):
    """The loss became NaN/inf; the message names the step and the last good checkpoint."""


def length_curriculum(start_bp: int, window_bp: int, batch_size: int, max_steps: int, accumulate: int = 1,
                      min_windows: int = 1, chunk_bp: int | None = None,
                      first_fraction: float | None = None) -> list[tuple[int, int, int, int | None]]:
    """The length curriculum: windows start_bp, 2*start_bp, ... up to window_bp, each stage training on the same
    bases per optimizer step as the final one (window_bp * batch_size * accumulate).

    A stage's micro-batch holds as many windows as those bases allow, but no more bases than the final stage's
    micro-batch keeps in memory at once: with `chunk_bp` that is batch_size * chunk_bp (a chunked million-base
    window holds one chunk's activations; a thousand 1 kb windows in one batch would hold them all), and the
    rest is gradient accumulation. Accumulation is also raised where a step would otherwise see fewer than
    `min_windows` windows (a classifier's batch of one million-base window holds one class, and Adam moves every
    weight as far on that one label as on a balanced batch: classes collapse).

    Stages are sized in optimizer steps so that every stage trains on the same number of bases, or, with
    `first_fraction`, the first stage takes that share of max_steps and the others split the rest so; the last
    stage runs until max_steps. Returns [(window_bp, batch_size, accumulate, steps), ...], steps None for the last."""
    if start_bp < 1 or start_bp > window_bp:
        raise ValueError(f"the length curriculum must start at 1..window_bp ({window_bp}) bp, got {start_bp}")
    step_bp = window_bp * batch_size * accumulate
    micro_bp = batch_size * min(window_bp, chunk_bp or window_bp)  # bases one micro-batch holds activations for
    plan, window = [], start_bp
    while window <= window_bp:
        final = window == window_bp
        batch = batch_size if final else max(1, min(micro_bp, step_bp) // window)
        k = accumulate if final else max(1, step_bp // (batch * window))
        plan.append((window, batch, max(k, -(-min_windows // batch))))
        window = window * 2 if window * 2 <= window_bp or final else window_bp
    # equal bases per stage: a stage's steps go as 1 / its bases per step
    shares = [step_bp / (w * b * k) for w, b, k in plan]  # steps of a stage per step of a plain one
    first = None
    if first_fraction is not None and len(plan) > 1:
        first = max(1, int(max_steps * first_fraction))
        shares[0] = 0.0
    per_stage = (max_steps - (first or 0)) / sum(shares)
    last = max(1, math.ceil(per_stage * shares[-1]))
    stages, used = [], 0
    for i, ((w, b, k), share) in enumerate(zip(plan[:-1], shares)):
        steps = first if i == 0 and first is not None else max(1, int(per_stage * share))
        if used + steps > max_steps - last:  # too few steps for every stage: the target window keeps its share
            break
        stages.append((w, b, k, steps))
        used += steps
    w, b, k = plan[-1]
    return [*stages, (w, b, k, None)]


class SeqLenWarmup(pl.Callback):
    """Walks training through `stages` [(window_bp, batch_size, accumulate, steps), ...] (see `length_curriculum`):
    one epoch a stage, of `steps` optimizer steps, the last stage until the end.

    The datamodule pulls the stage when Lightning builds an epoch's loader (its `stage_for_epoch` hook, called with
    the epoch being built; needs Trainer(reload_dataloaders_every_n_epochs=1)), and the accumulation is set at the
    start of the epoch. Both read the epoch Lightning is really in, so a resumed run, whether it stopped mid-epoch or
    at an epoch's last step, continues with the stage it would have had."""

    def __init__(self, stages, world_size: int = 1):
        if not stages:
            raise ValueError("SeqLenWarmup needs at least one stage")
        self.stages = [(int(w), int(b), int(k), None if s is None else int(s)) for w, b, k, s in stages]
        self.world_size = int(world_size)

    def stage_at(self, epoch: int) -> tuple[int, int, int, int | None]:
        """(window_bp, batch_size, accumulate, training windows of the epoch or None for the data's own count)."""
        window, batch, accumulate, steps = self.stages[min(epoch, len(self.stages) - 1)]
        return window, batch, accumulate, None if steps is None else steps * batch * accumulate * self.world_size

    def stage_starts(self) -> list[int]:
        """The optimizer step at which each stage begins."""
        return [0, *itertools.accumulate(s for *_, s in self.stages[:-1])]

    def lr_scale(self, full_windows: int):
        """step -> sqrt(min(1, windows / full_windows)) for the windows an optimizer step sees in the stage that step
        is in (optim.lr_full_windows); read at each step, so the world size set after construction counts."""
        starts = self.stage_starts()

        def scale(step: int) -> float:
            _, batch, accumulate, _ = self.stages[bisect.bisect_right(starts, step) - 1]
            return math.sqrt(min(1.0, batch * accumulate * self.world_size / full_windows))

        return scale

    def on_fit_start(self, trainer, pl_module):
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "stage_for_epoch"):
            raise ValueError("a length curriculum needs a datamodule with a stage_for_epoch hook (the window ones)")
        datamodule.stage_for_epoch = self.stage_at

    def on_train_epoch_start(self, trainer, pl_module):
        # what Lightning's GradientAccumulationScheduler does at each epoch
        trainer.accumulate_grad_batches = self.stage_at(trainer.current_epoch)[2]


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
        real = batch_bases(batch)  # kept on the device: reading it every step would make the GPU wait
        self._bases = real if self._bases is None else self._bases + real

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
