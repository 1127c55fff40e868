"""Training checkpoints that are never half-written and never hold non-finite weights.

`RunCheckpoints` saves `step-<N>.ckpt` (N = optimizer steps done) every `every_n_steps` and when training ends
(interrupts save through it too), keeps the newest `keep`, and points `last.ckpt` at the newest. Any of them
resumes exactly, mid-epoch included (the training loaders are resumable, see mambadna/data/datamodules.py). Before a checkpoint is written its weights are checked finite; it also records, under "mambadna", the
model class, config and init arguments, so a resume can refuse another model shape with one line.
`AtomicCheckpointIO` writes each checkpoint to a temporary name in the same folder and renames it into place;
`RunCSVLogger` keeps the metrics log whole too.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from mambadna.files import atomic_open

STEP_CKPT = re.compile(r"^step-(\d+)\.ckpt$")
LAST = "last.ckpt"


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.ckpt"


def step_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of the `step-<N>.ckpt` files in a checkpoints folder, oldest first."""
    found = []
    if Path(folder).is_dir():
        for path in Path(folder).iterdir():
            match = STEP_CKPT.match(path.name)
            if match and path.is_file() and not path.is_symlink():
                found.append((int(match.group(1)), path))
    return sorted(found)


def point_last_at(folder: Path, target: Path | None) -> None:
    """Make `last.ckpt` a relative link to `target` (replaced atomically), or remove it when target is None."""
    last = Path(folder) / LAST
    if target is None:
        with contextlib.suppress(FileNotFoundError):
            last.unlink()
        return
    tmp = last.with_name(f".{LAST}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):  # a filesystem without links just has no last.ckpt; resume reads step-*
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(target.name, tmp)
        os.replace(tmp, last)


class NonFiniteWeightsError(ValueError):
    """A checkpoint was about to be saved with NaN/inf weights; nothing was written."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temporary file beside the target, fsync, rename: a crash or a full disk leaves the
    previous checkpoint intact and no partial file under a checkpoint's name."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_open(path, "wb") as fh:
                torch.save(checkpoint, fh)
        except RuntimeError as err:
            # torch's zip writer reports a failed write (a full disk) as a RuntimeError about positions
            cause = err.__context__
            if isinstance(cause, OSError):
                raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from err
            raise


class RunCheckpoints(pl.Callback):
    def __init__(self, directory: str | Path, every_n_steps: int, keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory, self.every_n_steps, self.keep = Path(directory), int(every_n_steps), int(keep)
        self.last_saved: int | None = None
        self.last_path: Path | None = None

    def save(self, trainer: pl.Trainer) -> Path:
        """Save the state after `trainer.global_step` steps now (every rank must call it under DDP)."""
        step = trainer.global_step
        path = self.directory / checkpoint_name(step)
        trainer.save_checkpoint(path)
        self.last_saved, self.last_path = step, path
        if trainer.is_global_zero:
            point_last_at(self.directory, path)
            for _, old in step_checkpoints(self.directory)[: -self.keep]:
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()
        return path

    def on_train_start(self, trainer, pl_module):
        # a resumed run has its current step saved already; saving it again mid-accumulation would lose grads
        self.last_saved = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step and step % self.every_n_steps == 0 and step != self.last_saved and not _accumulating(trainer):
            self.save(trainer)

    def on_train_end(self, trainer, pl_module):
        if trainer.global_step and trainer.global_step != self.last_saved:
            self.save(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        bad = [k for k, t in checkpoint["state_dict"].items()
               if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            newest = self.last_path if self.last_path is not None and self.last_path.exists() else None
            where = f"the newest good checkpoint is {newest}" if newest else "no earlier checkpoint was saved"
            raise NonFiniteWeightsError(
                f"the weights became non-finite by step {trainer.global_step} ({', '.join(bad[:3])}"
                f"{' ...' if len(bad) > 3 else ''}); no checkpoint was written for it; {where}. Try a lower "
                "optim.lr, optim.grad_clip, or train.precision=32-true")
        model = getattr(pl_module, "model", None)
        if model is not None and hasattr(model, "init_kwargs"):
            checkpoint["mambadna"] = {"model_class": type(model).__name__, "config": model.config.to_dict(),
                                      "init_kwargs": model.init_kwargs()}


def _accumulating(trainer: pl.Trainer) -> bool:
    """True between the micro-batches of one optimizer step (gradients would be lost by saving there)."""
    fit_loop = trainer.fit_loop
    return bool(fit_loop._should_accumulate()) if hasattr(fit_loop, "_should_accumulate") else False


class OptimizerSettingsFromConfig(pl.Callback):
    """On resume, keep the optimizer's state (moments, step counts) from the checkpoint but its settings (learning
    rate, weight decay, betas) from the run config, so that `--resume --lr X` after a NaN stop really lowers it.
    Lightning would otherwise restore the old settings over the new optimizer, and the scheduler's old base rate."""

    def __init__(self):
        self._pending: dict | None = None

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        # the checkpoint is loaded into the optimizers later; most strategies create them later too (on_fit_start)
        self._pending = checkpoint
        if trainer.optimizers:
            self._apply(trainer)

    def on_fit_start(self, trainer, pl_module):
        if self._pending is not None and trainer.optimizers:
            self._apply(trainer)

    def _apply(self, trainer) -> None:
        checkpoint, self._pending = self._pending, None
        for fresh, saved in zip(trainer.optimizers, checkpoint.get("optimizer_states", [])):
            for group, old in zip(fresh.param_groups, saved.get("param_groups", [])):
                new_base, old_base = group.get("initial_lr", group["lr"]), old.get("initial_lr", old.get("lr"))
                if old_base and new_base != old_base:
                    old["lr"] = old["lr"] * new_base / old_base  # the same point of the schedule, rescaled
                    old["initial_lr"] = new_base
                for key in ("weight_decay", "betas"):
                    if key in group:
                        old[key] = group[key]
        for config, saved in zip(trainer.lr_scheduler_configs, checkpoint.get("lr_schedulers", [])):
            if "base_lrs" in saved:
                saved["base_lrs"] = list(config.scheduler.base_lrs)


class _ExperimentWriter(ExperimentWriter):
    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        # Lightning rewrites the whole CSV in place when a new metric appears; a crash there would lose the log
        with open(self.metrics_file_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        with atomic_open(self.metrics_file_path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)


class RunCSVLogger(CSVLogger):
    """Lightning's CSV logger, appending rows as before (a crash can cut at most the last row) but rewriting the
    file atomically when its header grows."""

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ExperimentWriter(log_dir=self.log_dir)
        return self._experiment
