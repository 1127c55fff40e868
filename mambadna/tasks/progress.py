"""Training progress of our own, on Lightning's Callback API (the Trainer's own bars are off).

Lightning's bar depends on what else is installed (rich or tqdm), counts epochs and batches rather than the run's
optimizer steps (a resumed run showed "100/57"), and writes nothing a redirected log can read until the end. This
reporter writes to stderr: on a terminal one bar redrawn in place, otherwise one line every `every_s` seconds;
both say step / max_steps (counted from the checkpoint's global step after a resume), the training loss, bases per
second since this process started training, and the time left. Each validation adds a line with its metrics.
Only the first process of a multi-process run writes.
"""

from __future__ import annotations

import sys
import time

import pytorch_lightning as pl
import torch

from mambadna.tokenizer import PAD_ID

BAR_WIDTH = 24
TTY_REFRESH_S = 0.25  # a bar redrawn more often only costs time


def clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def batch_bases(batch: dict) -> torch.Tensor:
    """Real (non-padding) bases of a batch, as a tensor on its device (reading it would make a GPU wait)."""
    ids = batch["input_ids"]
    return (batch["attention_mask"].sum() if "attention_mask" in batch else (ids != PAD_ID).sum()).detach()


class ProgressReport(pl.Callback):
    def __init__(self, every_s: float = 30.0, stream=None, tty: bool | None = None):
        self.every_s = float(every_s)
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty()) if tty is None else tty
        self._bases = None
        self._start = self._last = 0.0
        self._first_step = 0
        self._shown_step: int | None = None
        self._drawn = False  # a bar is on the current terminal line

    def on_train_start(self, trainer, pl_module):
        self._start = self._last = time.monotonic()
        self._first_step, self._bases, self._shown_step = trainer.global_step, None, trainer.global_step
        if trainer.is_global_zero:
            resumed = f", resumed at step {trainer.global_step}" if trainer.global_step else ""
            self._write(f"training {trainer.max_steps} steps{resumed}", newline=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        bases = batch_bases(batch)
        self._bases = bases if self._bases is None else self._bases + bases
        now = time.monotonic()
        done = trainer.global_step >= trainer.max_steps
        if not trainer.is_global_zero or trainer.global_step == self._shown_step or (
                now - self._last < (TTY_REFRESH_S if self.tty else self.every_s) and not done):
            return  # (the micro-batches of one accumulated step show once)
        self._last, self._shown_step = now, trainer.global_step
        self._write(self.line(trainer, now), newline=not self.tty)

    def line(self, trainer, now: float) -> str:
        step, total = trainer.global_step, trainer.max_steps
        elapsed = now - self._start
        done = step - self._first_step
        bases = int(self._bases.item()) * trainer.world_size if self._bases is not None else 0
        loss = trainer.callback_metrics.get("train/loss")
        parts = [f"step {step}/{total}", f"loss {float(loss):.4f}" if loss is not None else "loss -",
                 f"{bases / elapsed:,.0f} bases/s" if elapsed > 0 else "- bases/s",
                 f"elapsed {clock(elapsed)}",
                 f"ETA {clock((total - step) * elapsed / done)}" if done > 0 else "ETA -"]
        if self.tty:
            filled = BAR_WIDTH * step // max(1, total)
            parts[0] = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {parts[0]}"
        return "  ".join(parts)

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.state.fn != "fit":
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if metrics:
            text = "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
            self._write(f"validation at step {trainer.global_step}/{trainer.max_steps}: {text}", newline=True)

    def on_train_end(self, trainer, pl_module):
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def _write(self, text: str, newline: bool) -> None:
        if self.tty:
            # redraw the bar's line; a line that stays (a validation) first ends the bar's
            self.stream.write(("\n" if self._drawn and newline else "\r") + text + ("\n" if newline else "\x1b[K"))
            self._drawn = not newline
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
