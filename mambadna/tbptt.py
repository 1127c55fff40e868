"""Truncated backpropagation through time: train over a whole chromosome in consecutive windows.

Each training step runs the model over one window of every stream, starting from the per-layer states the
previous window of that stream ended in. Those states are carried forward *detached*: the forward of window k+1
sees the whole past of its contig, but gradients stop at the window boundary, so memory and compute per step are
those of one window. `mambadna.data.streams.ContigStreams` yields the batches: `input_ids`, aligned `targets`
(the next base of every position, IGNORE_INDEX where there is none) and `reset`, true for streams whose window
starts a new region (their state is zeroed first). The loss is the one of mambadna/objective.py.

Lightning's training_step only needs a `TBPTTRunner` kept on the module:

    loss = self.tbptt.step(self.model, batch, chunk_bp=self.hparams.chunk_bp)

Streams must stay in order and on their rank: DataLoader(dataset, batch_size=None, shuffle=False) and, under
DDP, Trainer(use_distributed_sampler=False) with the dataset built with rank / world_size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import torch

from mambadna.objective import lm_loss

if TYPE_CHECKING:
    from mambadna.model import LayerState, MambaLM


def reset_states(states: list["LayerState"], reset: torch.Tensor) -> list["LayerState"]:
    """Zero the rows of every layer's state where `reset` (b,) bool is true: those streams start a new region."""
    return [state.reset_rows(reset) for state in states]


def tbptt_step(
    model: "MambaLM",
    input_ids: torch.Tensor,
    targets: torch.Tensor,
    states: list["LayerState"] | None = None,
    reset: torch.Tensor | None = None,
    chunk_bp: int | None = None,
):
    """One window of truncated BPTT: input_ids, targets (b, l) aligned (logits[:, t] is scored against
    targets[:, t]); `states` from the previous window (None: zeros), `reset` (b,) zeroes chosen streams first.

    Returns (loss_sum () fp32 with grad, n_tokens () int64, new states detached). No gradient reaches the
    previous windows: the incoming states are detached. `chunk_bp` additionally runs the window chunk-major with
    recomputation (see mambadna/chunking.py), for windows too long to keep all activations.
    """
    b = input_ids.shape[0]
    if states is None:
        states = model.zero_states(b)
    else:
        model.check_states(states, b)
        states = [state.detach() for state in states]
    if reset is not None:
        if tuple(reset.shape) != (b,):
            raise ValueError(f"reset must be (b,) = ({b},), got {tuple(reset.shape)}")
        states = reset_states(states, reset)
    loss_sum, n_tokens, new_states = lm_loss(model, input_ids, targets, chunk_bp, states)
    return loss_sum, n_tokens, [state.detach() for state in new_states]


class TBPTTRunner:
    """Carries the per-stream states from one training step to the next (keep one per stream set, e.g. one for
    training and one for validation)."""

    def __init__(self):
        self.states: list["LayerState"] | None = None

    def reset(self) -> None:
        """Forget the carried states (e.g. at the start of an epoch; a batch with reset all true does the same)."""
        self.states = None

    def step(self, model: "MambaLM", batch: dict, chunk_bp: int | None = None) -> torch.Tensor:
        """Mean loss over the scored positions of one `ContigStreams` batch; remembers the new states."""
        for key in ("input_ids", "targets", "reset"):
            if key not in batch:
                raise ValueError(f"a TBPTT batch needs 'input_ids', 'targets' and 'reset'; {key!r} is missing")
        input_ids, targets, reset = batch["input_ids"], batch["targets"], batch["reset"]
        if self.states is not None and self.states[0].ssm.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"the carried states hold {self.states[0].ssm.shape[0]} streams but the batch has "
                f"{input_ids.shape[0]}; call reset() when the number of streams changes"
            )
        loss_sum, n_tokens, self.states = tbptt_step(model, input_ids, targets, self.states, reset, chunk_bp)
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
