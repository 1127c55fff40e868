"""Per-position hidden states -> one vector per sequence, over the real tokens of a right-padded batch.

Symbols as in mambadna/model.py. The modes are mambadna.config.POOLINGS; `pool` pools a whole batch,
`pool_partial` / `pool_finish` pool a sequence chunk by chunk (`pooled_chunked`, through mambadna/chunking.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mambadna.chunking import run_chunked
from mambadna.config import POOLINGS

if TYPE_CHECKING:
    from mambadna.model import MambaLM


def check_mask(attention_mask: torch.Tensor | None, b: int, l: int, device) -> torch.Tensor:
    """The (b, l) bool mask of real tokens (all true when None); refuses empty rows and left padding."""
    if attention_mask is None:
        return torch.ones(b, l, dtype=torch.bool, device=device)
    if tuple(attention_mask.shape) != (b, l):
        raise ValueError(f"attention_mask must be (b, l) = {(b, l)}, got {tuple(attention_mask.shape)}")
    mask = attention_mask.bool()
    lengths = mask.sum(-1)  # (b,)
    if bool((lengths == 0).any()):
        empty = torch.nonzero(lengths == 0).flatten().tolist()
        raise ValueError(f"attention_mask has rows with no real tokens: {empty}")
    prefix = torch.arange(l, device=mask.device)[None, :] < lengths[:, None]  # (b, l)
    if not torch.equal(prefix, mask):
        raise ValueError("attention_mask must be right-padded (real tokens first, then padding): a causal model's "
                         "states, and a bidirectional model's reverse pass, start at the real tokens")
    return mask


def pool_partial(hidden: torch.Tensor, mask: torch.Tensor, next_mask: torch.Tensor, offset: int,
                 pooling: str) -> torch.Tensor:
    """One chunk's share of the pooled vector: hidden (b, c, d) at positions [offset, offset + c), mask (b, c)
    its real-token mask, next_mask (b, c) whether position t + 1 is real -> (b, d). The shares of a sequence's
    chunks sum to what `pool_finish` turns into the pooled vector."""
    if pooling == "cls":
        return hidden[:, 0] if offset == 0 else hidden.new_zeros(hidden.shape[0], hidden.shape[-1])  # (b, d)
    if pooling == "last":
        mask = mask & ~next_mask  # the last real position: its successor is padding or the end; one per row
    return (hidden * mask.to(hidden.dtype).unsqueeze(-1)).sum(1)  # (b, d)


def pool_finish(total: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Summed chunk shares (b, d) -> pooled (b, d): the mean divides by the number of real tokens."""
    if pooling == "mean":
        return total / mask.sum(-1, keepdim=True).to(total.dtype)
    return total


def check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def _next_mask(mask: torch.Tensor) -> torch.Tensor:
    """(b, l) real-token mask -> (b, l + 1): whether position t is real, with a False past the end."""
    return torch.cat([mask, torch.zeros_like(mask[:, :1])], dim=1)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """hidden (b, l, d) -> (b, d).

    "mean": average over real tokens; "last": the last real token (with a causal model the only position that has
    seen the whole sequence); "cls": position 0 (it has seen only the first token in a causal model, so it carries
    little beyond BOS: prefer "last"). Batches must be right-padded: in a causal model left padding would change
    the states of every real token.
    """
    check_pooling(pooling)
    b, l, _ = hidden.shape
    mask = check_mask(attention_mask, b, l, hidden.device)
    return pool_finish(pool_partial(hidden, mask, _next_mask(mask)[:, 1:], 0, pooling), mask, pooling)


def pooled_chunked(model: "MambaLM", input_ids: torch.Tensor, attention_mask, pooling: str, chunk_bp: int):
    """`pool(model.hidden_states(input_ids), ...)` computed chunk by chunk (mambadna/chunking.py): activation
    memory grows with `chunk_bp`, not with l, and with grad each chunk is recomputed in the backward."""
    check_pooling(pooling)
    model.check_ids(input_ids)
    b, l = input_ids.shape
    mask = check_mask(attention_mask, b, l, input_ids.device)
    after = _next_mask(mask)  # (b, l + 1)

    def share(residual, start, end):  # residual (b, c, d) of positions [start, end)
        return (pool_partial(model.final_hidden(residual), mask[:, start:end], after[:, start + 1 : end + 1], start,
                             pooling),)

    (total,), _ = run_chunked(model, input_ids, chunk_bp, share)
    return pool_finish(total, mask, pooling)


def segment_means(model: "MambaLM", input_ids: torch.Tensor, attention_mask, segment_bp: int,
                  chunk_bp: int | None = None):
    """Mean pooling of the whole sequence and of each `segment_bp` stretch [k·segment_bp, (k+1)·segment_bp) of it,
    from one pass (chunk by chunk with `chunk_bp`) -> (pooled (b, d), segments (b, s, d), counts (b, s)): counts
    are each segment's real tokens (0 for a segment that is all padding, whose row is 0). The pooled vector is
    `embed(..., "mean")`'s: the mean is linear, so it is the segments' sums over the real tokens."""
    model.check_ids(input_ids)
    b, l = input_ids.shape
    mask = check_mask(attention_mask, b, l, input_ids.device)
    n_seg = -(-l // segment_bp)
    seg_of = torch.arange(l, device=mask.device) // segment_bp  # (l,) each position's segment

    def share(residual, start, end):  # residual (b, c, d) of positions [start, end)
        # summed in fp32: a bf16 running sum over a kilobase segment would lose the small terms
        hidden = model.final_hidden(residual).float() * mask[:, start:end].unsqueeze(-1)  # (b, c, d)
        return (hidden.new_zeros(b, n_seg, hidden.shape[-1]).index_add_(1, seg_of[start:end], hidden),)  # (b, s, d)

    (sums,), _ = run_chunked(model, input_ids, chunk_bp, share, attention_mask=attention_mask)
    counts = torch.zeros(b, n_seg, device=mask.device).index_add_(1, seg_of, mask.float())  # (b, s)
    pooled = sums.sum(1) / counts.sum(1, keepdim=True)  # (b, d)
    return pooled, sums / counts.clamp(min=1).unsqueeze(-1), counts
