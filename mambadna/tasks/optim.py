"""AdamW with the Mamba paper's weight-decay rule and a linear-warmup cosine schedule."""

from __future__ import annotations

import math

import torch

from mambadna.run_config import OptimSpec


def param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: parameters with ndim < 2 (norms, biases, D) or flagged `_no_weight_decay` (A_log)
    get none. Frozen parameters are left out; tied parameters appear once (named_parameters dedups them)."""
    decay, no_decay = [], []
    for _, param in module.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or getattr(param, "_no_weight_decay", False):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(total_steps: int, warmup_steps: int, min_lr_ratio: float):
    """lr multiplier: linear 0 -> 1 over warmup_steps, then cosine 1 -> min_lr_ratio at total_steps."""
    total_steps = max(1, total_steps)
    warmup_steps = min(warmup_steps, total_steps - 1) if total_steps > 1 else 0

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_optimizer(module: torch.nn.Module, spec: OptimSpec, total_steps: int, lr_scale=None):
    """The Lightning `configure_optimizers` dict: AdamW + per-step LambdaLR; `lr_scale(step)`, if given, multiplies
    the schedule (optim.lr_full_windows: the length curriculum's factor of the stage a step is in)."""
    # Not fused: Lightning refuses gradient clipping under mixed precision with a fused optimizer (seen on an H100).
    optimizer = torch.optim.AdamW(param_groups(module, spec.weight_decay), lr=spec.lr, betas=tuple(spec.betas))
    warmup = spec.warmup_steps if spec.warmup_steps is not None else int(spec.warmup_fraction * total_steps)
    schedule = warmup_cosine(total_steps, warmup, spec.min_lr_ratio)
    factor = schedule if lr_scale is None else (lambda step: schedule(step) * lr_scale(step))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
