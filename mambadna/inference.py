"""Generation from a MambaLM: prefill, sampling and the decode loop, through the model's public methods.

A Mamba layer's whole memory of the past is its `LayerState` (conv state (b, d_inner, d_conv) and SSM state
(b, d_inner, n) fp32), so generation costs O(1) memory and time per token whatever the context length, unlike
attention's growing KV cache. Symbols as in mambadna/model.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mambadna.tokenizer import tokenizer_from_name

if TYPE_CHECKING:
    from mambadna.model import LayerState, MambaLM


@torch.no_grad()
def prefill(model: "MambaLM", input_ids: torch.Tensor, states: list["LayerState"]) -> torch.Tensor:
    """Consume a whole chunk with the parallel scan, continuing from `states` and updating them in place.

    input_ids (b, l) -> logits (b, l, V). Calling it on consecutive chunks equals one forward over their
    concatenation; it is how a long prompt enters the state without l separate steps."""
    residual, new_states = model.trunk(input_ids, states)
    for state, new in zip(states, new_states):
        state.copy_(new)
    return model.lm_head(model.norm_f(residual))  # (b, l, V)


def sample(logits: torch.Tensor, allowed: tuple[int, int], temperature: float, top_k, generator) -> torch.Tensor:
    """logits (b, V) -> token ids (b,), drawn only from ids in [allowed[0], allowed[1])."""
    logits = logits.float().clone()
    logits[:, : allowed[0]] = float("-inf")
    logits[:, allowed[1] :] = float("-inf")
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        k = min(top_k, allowed[1] - allowed[0])
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (b, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # (b, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (b,)


def check_sampling(max_new_tokens, temperature, top_k) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")


@torch.no_grad()
def generate(
    model: "MambaLM",
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample continuations: prompt_ids (b, l0) -> (b, l0 + max_new_tokens).

    Only the tokenizer's real symbols are sampled (A C G T N for the nucleotide tokenizer; never PAD/BOS/EOS/
    MASK/UNK or vocabulary padding). temperature 0 means greedy; top_k keeps the k most likely ids."""
    model.check_ids(prompt_ids)
    check_sampling(max_new_tokens, temperature, top_k)
    allowed = tokenizer_from_name(model.config.tokenizer).sampleable_ids
    states = model.zero_states(prompt_ids.shape[0])
    logits = prefill(model, prompt_ids, states)[:, -1]  # (b, V)
    out = [prompt_ids]
    for i in range(max_new_tokens):
        token = sample(logits, allowed, temperature, top_k, generator).to(prompt_ids.dtype)  # (b,)
        out.append(token.unsqueeze(-1))
        if i + 1 < max_new_tokens:
            logits = model.step(token, states)
    return torch.cat(out, dim=-1)  # (b, l0 + max_new_tokens)
