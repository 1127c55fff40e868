"""SIGTERM (a scheduler's notice before preemption), SIGINT (Ctrl-C) and SIGHUP (the terminal that started the run
closed, e.g. an ssh session dropped) as a clean stop: checkpoint, then exit.

Python would raise KeyboardInterrupt wherever the signal lands, possibly halfway through an optimizer step, and
Lightning answers it with `sys.exit(1)`; its own SIGTERM handling exits 0. Instead, during training the signal
only sets a flag; at the end of the current optimizer step (or validation batch) the run saves a checkpoint at
that step and raises `TrainingInterrupted`, which the CLI turns into one line and exit code 128 + signal
(130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP). A second Ctrl-C stops at once, without a checkpoint.
"""

from __future__ import annotations

import signal
import threading

import pytorch_lightning as pl
import torch

from mambadna.tasks.checkpoints import RunCheckpoints, _accumulating

# SIGHUP's default would end the process where it stands, losing every step since the last checkpoint
SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class Interrupted(BaseException):
    """A signal stopped the command. A BaseException, like KeyboardInterrupt, so no `except Exception` eats it, but
    not a KeyboardInterrupt, which Lightning would turn into exit code 1."""

    def __init__(self, signum: int, step: int | None = None, checkpoint=None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.step, self.checkpoint = int(signum), step, checkpoint

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def raise_interrupted(signum, frame):
    """Signal handler for the phases outside training (setup, testing, saving): stop right there."""
    raise Interrupted(signum)


def install_handlers(handler=raise_interrupted) -> dict:
    """Route SIGINT/SIGTERM to `handler` (main thread only); returns the previous handlers for `restore`."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for signum in SIGNALS:
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, handler)
    return previous


def restore_handlers(previous: dict) -> None:
    for signum, handler in previous.items():
        if handler is not None:
            signal.signal(signum, handler)


class GracefulInterrupt(pl.Callback):
    def __init__(self, checkpoints: RunCheckpoints):
        self.checkpoints = checkpoints
        self.pending: int | None = None
        self._previous: dict = {}

    def _handler(self, signum, frame):
        if self.pending is not None and signum == signal.SIGINT:
            raise Interrupted(signum)  # the user insists
        self.pending = signum

    def on_train_start(self, trainer, pl_module):
        # after Lightning's own SIGTERM handler (registered when fit starts), which would exit 0 without a word
        self.pending = None
        self._previous = install_handlers(self._handler)

    def _stop_if_asked(self, trainer: pl.Trainer) -> None:
        pending = self.pending or 0
        if trainer.world_size > 1:  # every rank must agree, or the collective save below would hang
            flag = torch.tensor(pending, device=trainer.strategy.root_device)
            pending = int(trainer.strategy.reduce(flag, reduce_op="max"))
        if not pending:
            return
        path = self.checkpoints.save(trainer) if trainer.global_step else None
        for logger in trainer.loggers:  # the metrics so far, for the curves of the resumed run
            logger.save()
        raise Interrupted(pending, trainer.global_step, path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not _accumulating(trainer):
            self._stop_if_asked(trainer)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if trainer.state.fn == "fit":
            self._stop_if_asked(trainer)

    def _restore(self) -> None:
        restore_handlers(self._previous)
        self._previous = {}

    def on_train_end(self, trainer, pl_module):
        self._restore()
        if self.pending:  # arrived after the last step: the final checkpoint is saved; stop before testing
            raise Interrupted(self.pending, trainer.global_step, self.checkpoints.last_path)

    def on_exception(self, trainer, pl_module, exception):
        self._restore()
