"""When a run validates, and the model it keeps for it.

`StepValidation` validates every N optimizer steps, whatever the epoch length and the gradient accumulation (the
length curriculum changes accumulation from stage to stage, and Lightning's `val_check_interval` counts batches),
at the steps it is given besides (a curriculum's first stage's end) and at the last step. `BestModel` keeps the model
of the lowest validation loss beside the final one, and can put it back into the model that trained.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytorch_lightning as pl


class StepValidation(pl.Callback):
    """Validation after every `every_n_steps`-th optimizer step, after each of the steps `also_at` and after the
    last one.

    The Trainer is built to check after every batch (`val_check_interval=1`, `check_val_every_n_epoch=None`); this
    callback narrows the epoch loop's decision to the batches that complete a due optimizer step. (Lightning has
    no public hook for it: the decision is the epoch loop's `_should_check_val_fx`, wrapped at fit start.) A
    resumed run restarts at a step whose validation may not have run yet, and runs it, as Lightning does."""

    def __init__(self, every_n_steps: int, also_at=()):
        if every_n_steps < 1:
            raise ValueError(f"validation interval must be >= 1 step, got {every_n_steps}")
        self.every_n_steps = int(every_n_steps)
        self.also_at = frozenset(int(step) for step in also_at)
        self._validated_at: int | None = None

    def due(self, trainer) -> bool:
        step = trainer.global_step
        return (step > 0 and step != self._validated_at
                and (step % self.every_n_steps == 0 or step in self.also_at or step >= trainer.max_steps))

    def on_fit_start(self, trainer, pl_module):
        loop = trainer.fit_loop.epoch_loop
        decide = loop._should_check_val_fx

        def should_check(data_fetcher) -> bool:
            if not (decide(data_fetcher) and self.due(trainer)):
                return False
            self._validated_at = trainer.global_step
            return True

        loop._should_check_val_fx = should_check


class BestModel(pl.Callback):
    """Keeps the model of the lowest `monitor` (val/loss) seen so far as a save_pretrained folder in `directory`,
    beside the run's final model. The best score and its step live in the training checkpoints (this callback's
    state), so a resumed run goes on comparing with the right one. A checkpoint is saved before its step's
    validation, so the folder may hold a model that validation chose after the checkpoint: `saved(folder)` reads
    its {"step", monitor} back, and a resumed run adopts it when it comes from a step the run has reached.
    `save(model, folder, {"step", monitor})` writes the folder (default: `model.save_pretrained(folder)`), under a
    temporary name renamed into place, so it always holds one whole model."""

    def __init__(self, directory: str | Path, monitor: str = "val/loss", save=None, saved=None):
        self.directory, self.monitor = Path(directory), monitor
        self.save = save if save is not None else (lambda model, folder, extra: model.save_pretrained(folder))
        self.saved = saved
        self.best: float | None = None
        self.best_step: int | None = None
        self.last_metrics: dict[str, float] = {}  # of the newest validation, for the summary
        self.last_step: int | None = None

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "monitor": self.monitor}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict.get("monitor", self.monitor) == self.monitor:
            self.best, self.best_step = state_dict.get("best"), state_dict.get("best_step")

    def on_train_start(self, trainer, pl_module):
        # after a resume (the loops, global_step included, are restored by now)
        info = self.saved(self.directory) if self.saved is not None and self.directory.is_dir() else None
        if not info or info.get("step") is None or info.get(self.monitor) is None:
            return
        if info["step"] <= trainer.global_step and (self.best is None or info[self.monitor] < self.best):
            self.best, self.best_step = float(info[self.monitor]), int(info["step"])

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        self.last_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.last_step = trainer.global_step
        score = self.last_metrics.get(self.monitor)
        if score is None or score != score or (self.best is not None and score >= self.best):
            return
        self.best, self.best_step = score, trainer.global_step
        if trainer.is_global_zero:
            self._save(pl_module.model, trainer.global_step, score)

    def _save(self, model, step: int, score: float) -> None:
        parent = self.directory.parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = parent / f".{self.directory.name}.{os.getpid()}.tmp"
        old = parent / f".{self.directory.name}.{os.getpid()}.old"
        for stale in (tmp, old):
            shutil.rmtree(stale, ignore_errors=True)
        self.save(model, tmp, {"step": step, self.monitor: score})
        if self.directory.exists():
            os.replace(self.directory, old)
        os.replace(tmp, self.directory)
        shutil.rmtree(old, ignore_errors=True)

    def restore(self, trainer, model) -> int | None:
        """Load the best model's weights into `model` (every rank, once rank 0 has written them) and return its
        step; None, and `model` untouched, when no validation scored or the best is the model as it stands."""
        trainer.strategy.barrier()
        if self.best_step is None or self.best_step == trainer.global_step or not self.directory.is_dir():
            return None
        model.load_state_dict(type(model).from_pretrained(self.directory).state_dict())
        return self.best_step

    def summary(self) -> dict:
        """The newest validation's metrics and the best model's step and score (empty before any validation)."""
        if self.last_step is None and self.best_step is None:
            return {}
        out = {"val_step": self.last_step, **self.last_metrics}
        if self.best_step is not None:
            out.update({"best_step": self.best_step, f"best_{self.monitor.replace('/', '_')}": self.best,
                        "best_model_dir": str(self.directory)})
        return out
