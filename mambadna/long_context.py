"""Long contexts in bounded memory: the whole model run over the sequence in chunks, carrying every layer's state.

A Mamba layer's memory of the past is its conv state (the last d_conv conv inputs, (b, d_inner, d_conv)) and its
SSM state ((b, d_inner, n), fp32), so running a sequence chunk by chunk, handing each layer's final states to the
same layer on the next chunk, gives exactly the unchunked result (up to floating-point rounding).

Training (`chunked_lm_loss`) is chunk-major across all layers: chunk k goes through every layer and its
next-token loss is computed inside one `torch.utils.checkpoint` region, so all that is stored per chunk is the
token ids, the targets, every layer's states at the chunk boundary and a scalar. The backward then recomputes the
chunks in reverse order (chunk k+1 consumed chunk k's states, so its backward runs first) and the state gradients
flow from chunk k+1 into chunk k. Peak activation memory grows with `chunk_bp`, not with the context.

The other, per-block form of activation checkpointing (one (b, l, d) residual stored per layer) is
`mambadna.tasks.memory.enable_activation_checkpointing`; `chunked_hidden_states` embeds long sequences under
no_grad in O(chunk) activation memory.
Symbols as in mambadna/model.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

if TYPE_CHECKING:
    from mambadna.model import MambaLM

IGNORE_INDEX = -100

# One (conv_state (b, d_inner, d_conv), ssm_state (b, d_inner, n) fp32) pair per layer; None stands for zeros.
LayerStates = list[tuple[torch.Tensor, torch.Tensor]]


def zero_states(model: "MambaLM", batch_size: int, device=None, dtype=None) -> LayerStates:
    """Every layer's state for the start of a sequence (the same zeros recurrent inference starts from)."""
    cache = model.allocate_cache(batch_size, device=device, dtype=dtype)
    return list(zip(cache.conv_states, cache.ssm_states))


def check_states(model: "MambaLM", states: LayerStates, batch_size: int) -> None:
    """Raise ValueError unless `states` holds one (conv, ssm) pair per layer with the shapes of this model."""
    cfg = model.config
    if not isinstance(states, (list, tuple)) or len(states) != cfg.n_layer:
        got = len(states) if isinstance(states, (list, tuple)) else type(states).__name__
        raise ValueError(f"states must be a list of {cfg.n_layer} (conv_state, ssm_state) pairs, got {got}")
    want_conv = (batch_size, cfg.d_inner, cfg.d_conv)
    want_ssm = (batch_size, cfg.d_inner, cfg.d_state)
    for i, pair in enumerate(states):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"states[{i}] must be a (conv_state, ssm_state) pair")
        conv, ssm = pair
        if tuple(conv.shape) != want_conv or tuple(ssm.shape) != want_ssm:
            raise ValueError(
                f"states[{i}] must be conv {want_conv} and ssm {want_ssm}, got conv {tuple(conv.shape)} "
                f"and ssm {tuple(ssm.shape)}"
            )


def forward_with_states(model: "MambaLM", input_ids: torch.Tensor, states: LayerStates | None = None):
    """input_ids (b, l), continuing from `states` (None: start of sequence) -> (final-normed hidden (b, l, d),
    every layer's states after the last position)."""
    residual = model.embedding(input_ids)  # (b, l, d)
    if model.config.residual_in_fp32:
        residual = residual.float()
    new_states = []
    for layer, (conv, ssm) in zip(model.layers, states or [(None, None)] * len(model.layers)):
        residual, conv, ssm = layer(residual, conv, ssm, return_state=True)
        new_states.append((conv, ssm))
    return model.norm_f(residual), new_states


def lm_loss_sum(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Summed cross-entropy of logits (b, l, V) against aligned targets (b, l), in fp32."""
    return F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=ignore_index, reduction="sum"
    )  # (b*l, V) -> ()


def _chunk_loss(model, ignore_index, input_ids, targets, *flat_states):
    """The checkpointed unit: one chunk through every layer and its loss. Flat arguments and results because
    checkpoint tracks tensors only at the top level: (loss_sum, conv_0, ssm_0, conv_1, ssm_1, ...)."""
    states = None if flat_states[0] is None else list(zip(flat_states[0::2], flat_states[1::2]))
    hidden, new_states = forward_with_states(model, input_ids, states)
    loss = lm_loss_sum(model.lm_head(hidden), targets, ignore_index)  # (b, l, d) -> (b, l, V) -> ()
    return (loss, *[t for pair in new_states for t in pair])


def check_chunk_bp(chunk_bp: int) -> None:
    if isinstance(chunk_bp, bool) or not isinstance(chunk_bp, int) or chunk_bp < 1:
        raise ValueError(f"chunk_bp must be a positive int, got {chunk_bp!r}")


def check_targets(model: "MambaLM", targets: torch.Tensor, shape, ignore_index: int, name: str) -> None:
    if not isinstance(targets, torch.Tensor) or targets.dtype not in (torch.long, torch.int32):
        raise ValueError(f"{name} must be an int64/int32 tensor, got {getattr(targets, 'dtype', type(targets))}")
    if tuple(targets.shape) != tuple(shape):
        raise ValueError(f"{name} must have the shape of input_ids {tuple(shape)}, got {tuple(targets.shape)}")
    valid = targets[targets != ignore_index]
    vocab = model.config.vocab_size
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= vocab):
        raise ValueError(
            f"{name} must lie in [0, {vocab}) or equal ignore_index ({ignore_index}), "
            f"got values {int(valid.min())}..{int(valid.max())}"
        )


def chunked_loss_aligned(
    model: "MambaLM",
    input_ids: torch.Tensor,
    targets: torch.Tensor,
    chunk_bp: int | None,
    states: LayerStates | None = None,
    ignore_index: int = IGNORE_INDEX,
):
    """Summed loss of logits[:, t] against targets[:, t] (already aligned, no shift), run chunk-major.

    input_ids, targets (b, l); `states` continue an earlier window (None: start of sequence). Returns
    (loss_sum (), every layer's states after position l-1). With grad enabled each chunk is one non-reentrant
    checkpoint region; without grad the chunks just run one after another. `chunk_bp=None` runs the whole
    length as one chunk without checkpointing (no recomputation, activation memory O(l)).
    """
    if chunk_bp is not None:
        check_chunk_bp(chunk_bp)
    recompute = chunk_bp is not None and torch.is_grad_enabled()
    chunk_bp = chunk_bp or input_ids.shape[1]
    flat = [None] if states is None else [t for pair in states for t in pair]
    total = None
    for start in range(0, input_ids.shape[1], chunk_bp):
        ids = input_ids[:, start : start + chunk_bp]  # (b, chunk)
        tgt = targets[:, start : start + chunk_bp]  # (b, chunk)
        if recompute:
            out = checkpoint(_chunk_loss, model, ignore_index, ids, tgt, *flat, use_reentrant=False)
        else:
            out = _chunk_loss(model, ignore_index, ids, tgt, *flat)
        total = out[0] if total is None else total + out[0]
        flat = list(out[1:])
    return total, list(zip(flat[0::2], flat[1::2]))


def chunked_lm_loss(
    model: "MambaLM",
    input_ids: torch.Tensor,
    chunk_bp: int | None,
    labels: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
):
    """Next-token loss of a long sequence in O(chunk_bp) activation memory; equal to the unchunked model's.

    input_ids (b, l), l >= 2. `labels` (b, l) follow the shift-inside convention: position t's logits are scored
    against labels[:, t+1] (default: input_ids, i.e. plain next-token prediction); entries equal to
    `ignore_index` are skipped. The last token of chunk k is scored against the first label of chunk k+1.
    Returns (loss_sum () fp32, n_tokens () int64): sum over scored positions and their count, so that losses of
    several calls (or DDP ranks) combine exactly; `chunked_lm_loss_mean` divides. `chunk_bp=None` is one plain
    pass (no chunks, no recomputation), so callers can keep a single code path.
    """
    model._check_ids(input_ids)
    if input_ids.shape[1] < 2:
        raise ValueError(f"next-token loss needs sequences of at least 2 tokens, got shape {tuple(input_ids.shape)}")
    if labels is None:
        labels = input_ids
    else:
        check_targets(model, labels, input_ids.shape, ignore_index, "labels")
    # the last position has no next label, so it is never run: inputs and targets are aligned from here on
    inputs, targets = input_ids[:, :-1], labels[:, 1:]  # (b, l-1) each
    loss_sum, _ = chunked_loss_aligned(model, inputs, targets, chunk_bp, ignore_index=ignore_index)
    return loss_sum, (targets != ignore_index).sum()


def chunked_lm_loss_mean(model: "MambaLM", input_ids, chunk_bp: int | None, labels=None, ignore_index: int = IGNORE_INDEX):
    """Mean next-token loss over scored positions (the unchunked `F.cross_entropy(..., reduction="mean")`)."""
    loss_sum, n_tokens = chunked_lm_loss(model, input_ids, chunk_bp, labels, ignore_index)
    return loss_sum / n_tokens.clamp_min(1)


@torch.no_grad()
def chunked_hidden_states(model: "MambaLM", input_ids: torch.Tensor, chunk_bp: int, out_device=None):
    """Final-normed hidden states (b, l, d) of a long sequence, computed chunk by chunk without grad.

    Activation memory is O(chunk_bp); the result itself is (b, l, d), which `out_device="cpu"` keeps off the GPU.
    Equals `model.hidden_states(input_ids)` up to rounding.
    """
    model._check_ids(input_ids)
    check_chunk_bp(chunk_bp)
    b, l = input_ids.shape
    out, states = None, None
    for start in range(0, l, chunk_bp):
        hidden, states = forward_with_states(model, input_ids[:, start : start + chunk_bp], states)  # (b, chunk, d)
        if out is None:
            out = torch.empty(b, l, hidden.shape[-1], dtype=hidden.dtype, device=out_device or hidden.device)
        out[:, start : start + hidden.shape[1]] = hidden
    return out
