"""Memory and speed switches applied to a model by the tasks: activation checkpointing and torch.compile.

Both keep the module tree (and so state_dict keys and save_pretrained) unchanged: checkpointing replaces each
block's `forward` on the instance, compile wraps a callable that is not registered as a submodule.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def enable_activation_checkpointing(blocks) -> None:
    """Recompute each block's activations in backward instead of storing them (memory ~ one block's worth).

    Only plain training calls are checkpointed; calls that carry recurrent state (prefill) or run without grad
    go straight through."""
    for block in blocks:
        if getattr(block, "_mambadna_checkpointed", False):
            continue
        inner = block.forward

        def forward(residual, *args, _inner=inner, **kwargs):
            if args or kwargs or not torch.is_grad_enabled():
                return _inner(residual, *args, **kwargs)
            return checkpoint(_inner, residual, use_reentrant=False)

        block.forward = forward
        block._mambadna_checkpointed = True


def maybe_compile(module: torch.nn.Module, enabled: bool):
    """`torch.compile(module)` when enabled, else the module itself (call it, keep `module` for parameters)."""
    return torch.compile(module) if enabled else module
