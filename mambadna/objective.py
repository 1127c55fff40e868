"""The training objectives, in one place: next-base prediction, masked-base prediction and classification.

Every language-model batch arrives with `input_ids` and `targets` already aligned by the data layer, so there is
no shifting here and one loss path serves both language-model objectives (`OBJECTIVES`): "clm", target t is the
base after input t (mambadna/data/windows.py); "mlm", target t is the original base at a masked position t
(mambadna/data/masking.py). `IGNORE_INDEX` marks what is not scored. The same path serves plain,
sequence-chunked (`chunk_bp`, mambadna/chunking.py) and truncated-BPTT (`states` carried in by mambadna/tbptt.py)
training. Losses are summed in fp32 and returned with the number of scored positions, so that chunks, windows and
DDP ranks combine exactly; the mean is loss_sum / n_tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from mambadna.chunking import run_chunked
# declared with the model's settings, which check them before torch is loaded
from mambadna.config import OBJECTIVES, check_objective  # noqa: F401
from mambadna.pooling import segment_means
from mambadna.tokenizer import IGNORE_INDEX

if TYPE_CHECKING:
    from mambadna.model import LayerState, MambaClassifier, MambaLM


def check_targets(model: "MambaLM", targets: torch.Tensor, shape, name: str = "targets") -> None:
    if not isinstance(targets, torch.Tensor) or targets.dtype not in (torch.long, torch.int32):
        raise ValueError(f"{name} must be an int64/int32 tensor, got {getattr(targets, 'dtype', type(targets))}")
    if tuple(targets.shape) != tuple(shape):
        raise ValueError(f"{name} must have the shape of input_ids {tuple(shape)}, got {tuple(targets.shape)}")
    valid = targets[targets != IGNORE_INDEX]
    vocab = model.config.vocab_size
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= vocab):
        raise ValueError(f"{name} must lie in [0, {vocab}) or equal IGNORE_INDEX ({IGNORE_INDEX}), "
                         f"got values {int(valid.min())}..{int(valid.max())}")


def next_token_targets(sequence: torch.Tensor, attention_mask: torch.Tensor | None = None, pad_id: int | None = None):
    """Aligned (input_ids (b, l-1), targets (b, l-1)) from whole sequences (b, l): target t is base t+1; padding
    (by `attention_mask` or `pad_id`) is never scored. What the window datasets do when they read l+1 bases."""
    if sequence.dim() != 2 or sequence.shape[1] < 2:
        raise ValueError(f"next-token prediction needs sequences of at least 2 tokens, got shape "
                         f"{tuple(sequence.shape)}")
    targets = sequence[:, 1:].clone()
    if pad_id is not None:
        targets[targets == pad_id] = IGNORE_INDEX
    if attention_mask is not None:
        targets[~attention_mask[:, 1:].bool()] = IGNORE_INDEX
    return sequence[:, :-1], targets


def token_scores(model: "MambaLM", input_ids: torch.Tensor, targets: torch.Tensor, chunk_bp: int | None = None,
                 states: list["LayerState"] | None = None, attention_mask: torch.Tensor | None = None):
    """Summed cross-entropy of logits[:, t] against targets[:, t] and the number of them predicted right (argmax)
    -> (loss_sum () fp32, n_correct () int64, n_tokens () int64, every layer's state after the last position).

    input_ids, targets (b, l); `states` continue an earlier window (None: start of sequence). `chunk_bp` runs the
    window chunk-major with each chunk recomputed in the backward (exact; memory grows with the chunk).
    `attention_mask` (b, l) marks real tokens of a right-padded batch (needed by the non-causal models)."""
    model.check_ids(input_ids)
    check_targets(model, targets, input_ids.shape)

    def share(residual, start, end):  # residual (b, c, d) of positions [start, end)
        logits = model.logits(residual)  # (b, c, V)
        chunk_targets = targets[:, start:end]
        loss = F.cross_entropy(logits.float().flatten(0, 1), chunk_targets.flatten(),
                               ignore_index=IGNORE_INDEX, reduction="sum")  # (b*c, V) -> (); fp32 under bf16
        correct = (logits.detach().argmax(-1) == chunk_targets).sum()  # IGNORE_INDEX never equals an id
        return loss, correct

    (loss_sum, n_correct), new_states = run_chunked(model, input_ids, chunk_bp, share, states,
                                                    attention_mask=attention_mask)
    return loss_sum, n_correct, (targets != IGNORE_INDEX).sum(), new_states


def lm_loss(model: "MambaLM", input_ids: torch.Tensor, targets: torch.Tensor, chunk_bp: int | None = None,
            states: list["LayerState"] | None = None, attention_mask: torch.Tensor | None = None):
    """`token_scores` without the count of right predictions -> (loss_sum, n_tokens, states)."""
    loss_sum, _, n_tokens, new_states = token_scores(model, input_ids, targets, chunk_bp, states, attention_mask)
    return loss_sum, n_tokens, new_states


def lm_loss_mean(model: "MambaLM", input_ids, targets, chunk_bp: int | None = None, states=None) -> torch.Tensor:
    """Mean next-token loss over the scored positions (what `F.cross_entropy(..., reduction="mean")` gives)."""
    loss_sum, n_tokens, _ = lm_loss(model, input_ids, targets, chunk_bp, states)
    return loss_sum / n_tokens.clamp_min(1)


def classification_loss(model: "MambaClassifier", input_ids: torch.Tensor, attention_mask, labels: torch.Tensor,
                        chunk_bp: int | None = None, segment_bp: int | None = None):
    """Mean cross-entropy of the classifier's logits against labels (b,) -> (loss (), logits (b, k)).

    With `segment_bp` (mean pooling, windows longer than it), every `segment_bp` stretch of a window is also
    classified on its own, from the same pass, and the mean of those segments' cross-entropies is added: a
    window's label holds for each stretch of it, so a step over one long window still carries many labelled
    examples, each of which must be told from its own bases (with a causal model, and everything before it)."""
    l = input_ids.shape[1]
    if segment_bp is None or l <= segment_bp or model.pooling != "mean":
        logits = model(input_ids, attention_mask, chunk_bp)  # (b, k)
        return F.cross_entropy(logits.float(), labels), logits
    pooled, segments, counts = segment_means(model.backbone, input_ids, attention_mask, segment_bp, chunk_bp)
    logits = model.head(pooled.to(model.head.weight.dtype))  # (b, k)
    seg_logits = model.head(segments.to(model.head.weight.dtype)).float()  # (b, s, k)
    seg_ce = F.cross_entropy(seg_logits.flatten(0, 1), labels.repeat_interleave(seg_logits.shape[1]),
                             reduction="none")  # (b·s,)
    real = (counts.flatten() > 0).float()  # segments that hold a real base
    seg_loss = (seg_ce * real).sum() / real.sum()
    return F.cross_entropy(logits.float(), labels) + seg_loss, logits
