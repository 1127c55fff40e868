"""Truncated backpropagation through time: train over a whole chromosome in consecutive windows.

Each training step runs the model over one window of every stream, starting from the per-layer states the
previous window of that stream ended in. Those states are carried forward *detached*: the forward of window k+1
sees the whole past of its contig, but gradients stop at the window boundary, so memory and compute per step are
those of one window. `mambadna.data.streams.ContigStreams` yields the batches: `input_ids`, aligned `targets`
(the next base of every position, -100 where there is none) and `reset`, true for streams whose window starts a
new region (their state is zeroed first).

Lightning's training_step only needs a `TBPTTRunner` kept on the module:

    loss = self.tbptt.step(self.model, batch, chunk_bp=self.hparams.chunk_bp)

Streams must stay in order and on their rank: DataLoader(dataset, batch_size=None, shuffle=False) and, under
DDP, Trainer(use_distributed_sampler=False) with the dataset built with rank / world_size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import torch

from mambadna.long_context import (
    IGNORE_INDEX,
    LayerStates,
    check_states,
    check_targets,
    chunked_loss_aligned,
    zero_states,
)

if TYPE_CHECKING:
    from mambadna.model import MambaLM


def reset_states(states: LayerStates, reset: torch.Tensor) -> LayerStates:
    """Zero the rows of every layer's states where `reset` (b,) bool is true: those streams start a new region."""
    keep = ~reset.to(device=states[0][1].device, dtype=torch.bool)  # (b,)
    return [(conv * keep[:, None, None].to(conv.dtype), ssm * keep[:, None, None]) for conv, ssm in states]


def detach_states(states: LayerStates) -> LayerStates:
    return [(conv.detach(), ssm.detach()) for conv, ssm in states]


def tbptt_step(
    model: "MambaLM",
    input_ids: torch.Tensor,
    targets: torch.Tensor,
    states: LayerStates | None = None,
    reset: torch.Tensor | None = None,
    chunk_bp: int | None = None,
    ignore_index: int = IGNORE_INDEX,
):
    """One window of truncated BPTT: input_ids, targets (b, l) aligned (logits[:, t] is scored against
    targets[:, t]); `states` from the previous window (None: zeros), `reset` (b,) zeroes chosen streams first.

    Returns (loss_sum () fp32 with grad, n_tokens () int64, new states detached). No gradient reaches the
    previous windows: the incoming states are detached. `chunk_bp` additionally runs the window chunk-major with
    recomputation (see `mambadna.long_context`), for windows too long to keep all activations.
    """
    model._check_ids(input_ids)
    check_targets(model, targets, input_ids.shape, ignore_index, "targets")
    b = input_ids.shape[0]
    if states is None:
        param = model.embedding.weight
        states = zero_states(model, b, device=param.device)
    else:
        check_states(model, states, b)
        states = detach_states(states)
    if reset is not None:
        if tuple(reset.shape) != (b,):
            raise ValueError(f"reset must be (b,) = ({b},), got {tuple(reset.shape)}")
        states = reset_states(states, reset)
    loss_sum, new_states = chunked_loss_aligned(model, input_ids, targets, chunk_bp, states, ignore_index)
    return loss_sum, (targets != ignore_index).sum(), detach_states(new_states)


class TBPTTRunner:
    """Carries the per-stream states from one training step to the next (keep one per stream set, e.g. one for
    training and one for validation)."""

    def __init__(self, ignore_index: int = IGNORE_INDEX):
        self.ignore_index = ignore_index
        self.states: LayerStates | None = None

    def reset(self) -> None:
        """Forget the carried states (e.g. at the start of an epoch; a batch with reset all true does the same)."""
        self.states = None

    def step(self, model: "MambaLM", batch: dict, chunk_bp: int | None = None) -> torch.Tensor:
        """Mean loss over the scored positions of one `ContigStreams` batch; remembers the new states."""
        for key in ("input_ids", "targets", "reset"):
            if key not in batch:
                raise ValueError(f"a TBPTT batch needs 'input_ids', 'targets' and 'reset'; {key!r} is missing")
        input_ids, targets, reset = batch["input_ids"], batch["targets"], batch["reset"]
        if self.states is not None and self.states[0][1].shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"the carried states hold {self.states[0][1].shape[0]} streams but the batch has "
                f"{input_ids.shape[0]}; call reset() when the number of streams changes"
            )
        loss_sum, n_tokens, self.states = tbptt_step(
            model, input_ids, targets, self.states, reset, chunk_bp, self.ignore_index
        )
        return loss_sum / n_tokens.clamp_min(1)


def train_tbptt(
    model: "MambaLM",
    batches: Iterable[dict],
    optimizer: torch.optim.Optimizer,
    max_steps: int | None = None,
    chunk_bp: int | None = None,
    grad_clip: float | None = 1.0,
    device=None,
) -> list[float]:
    """A plain-PyTorch TBPTT loop over consecutive `ContigStreams` batches; returns the loss of each step."""
    runner, losses = TBPTTRunner(), []
    model.train()
    for i, batch in enumerate(batches):
        if max_steps is not None and i >= max_steps:
            break
        if device is not None:
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        loss = runner.step(model, batch, chunk_bp)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses
