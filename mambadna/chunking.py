"""Long sequences in bounded memory: the model run chunk by chunk, every layer's state carried across chunks.

A Mamba layer's memory of the past is its `LayerState` (the last d_conv conv inputs and the SSM state h), so
running a sequence chunk by chunk, handing each layer's final state to the same layer on the next chunk, gives
exactly the unchunked result (up to floating-point rounding).

`run_chunked` is chunk-major across all layers: chunk k goes through the whole trunk and is reduced at once by a
`share` function (its summed loss, its share of a pooled vector, ...), and with grad enabled each chunk is one
non-reentrant `torch.utils.checkpoint` region. All that is stored per chunk is its slice of the inputs, every
layer's state at the chunk boundary and the (small) shares. The backward recomputes the chunks in reverse order
(chunk k+1 consumed chunk k's states, so its backward runs first) and state gradients flow from chunk k+1 into
chunk k. Peak activation memory grows with `chunk_bp`, not with the sequence. The other form of activation
checkpointing, one (b, l, d) residual stored per block, is `MambaLM.activation_checkpointing`.
Only a causal model runs in chunks (`NOT_CHUNKABLE` says why).
Symbols as in mambadna/model.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch.utils.checkpoint import checkpoint

# declared with the model's settings, which check them before torch is loaded
from mambadna.config import NOT_CHUNKABLE, check_chunk_bp  # noqa: F401

if TYPE_CHECKING:
    from mambadna.model import LayerState, MambaLM

# share(residual (b, c, d) of positions [start, end), start, end) -> tuple of tensors, summed over the chunks
Share = Callable[[torch.Tensor, int, int], tuple]


def _chunk(model: "MambaLM", share: Share, input_ids: torch.Tensor, start: int, end: int, states, n_layers,
           attention_mask):
    """The checkpointed unit: positions [start, end) through every layer, then reduced."""
    mask = None if attention_mask is None else attention_mask[:, start:end]
    residual, new_states = model.trunk(input_ids[:, start:end], states, n_layers=n_layers,
                                       attention_mask=mask)  # (b, c, d)
    return tuple(share(residual, start, end)), new_states


def run_chunked(model: "MambaLM", input_ids: torch.Tensor, chunk_bp: int | None, share: Share,
                states: list["LayerState"] | None = None, n_layers: int | None = None,
                attention_mask: torch.Tensor | None = None):
    """Run input_ids (b, l) through the trunk in chunks of `chunk_bp` positions, continuing from `states` (None:
    start of sequence) -> (the shares summed over chunks, every layer's state after position l-1; None for a
    non-causal model). `attention_mask` (b, l) goes to the trunk (the non-causal models need it).

    `chunk_bp=None` is one plain pass (one chunk, no recomputation), so callers keep a single code path; it is the
    only form a non-causal model takes. Without grad the chunks simply run one after another. `n_layers` stops
    after the first n blocks (`MambaLM.trunk`)."""
    if chunk_bp is not None:
        check_chunk_bp(chunk_bp, model.config)
    recompute = chunk_bp is not None and torch.is_grad_enabled()
    length = input_ids.shape[1]
    size = chunk_bp or length
    totals = None
    for start in range(0, length, size):
        end = min(start + size, length)
        if recompute:
            shares, states = checkpoint(_chunk, model, share, input_ids, start, end, states, n_layers,
                                        attention_mask, use_reentrant=False)
        else:
            shares, states = _chunk(model, share, input_ids, start, end, states, n_layers, attention_mask)
        totals = shares if totals is None else tuple(t + s for t, s in zip(totals, shares))
    return totals, states
