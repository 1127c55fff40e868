"""Recurrent inference for MambaLM: a fixed-size cache, one-token steps and sampling.

A Mamba layer's whole memory of the past is its conv state (the last d_conv inputs of the conv, (b, d_inner,
d_conv)) and its SSM state h ((b, d_inner, n), fp32). So generation costs O(1) memory and time per token whatever
the context length, unlike attention's growing KV cache. Symbols as in mambadna/model.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from mambadna.tokenizer import tokenizer_from_name

if TYPE_CHECKING:
    from mambadna.model import MambaLM, MambaMixer


@dataclass
class InferenceCache:
    """Per-layer recurrent state; `seqlen_offset` counts the tokens consumed so far."""

    conv_states: list[torch.Tensor]  # n_layer x (b, d_inner, d_conv), model dtype
    ssm_states: list[torch.Tensor]  # n_layer x (b, d_inner, n), fp32
    seqlen_offset: int = 0

    @property
    def batch_size(self) -> int:
        return self.ssm_states[0].shape[0]


def allocate_cache(model: "MambaLM", batch_size: int, device=None, dtype=None) -> InferenceCache:
    """Zero state for `batch_size` sequences; device and dtype default to the model's parameters."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    param = model.embedding.weight
    device = param.device if device is None else device
    dtype = param.dtype if dtype is None else dtype
    cfg = model.config
    return InferenceCache(
        conv_states=[
            torch.zeros(batch_size, cfg.d_inner, cfg.d_conv, device=device, dtype=dtype) for _ in model.layers
        ],
        ssm_states=[
            torch.zeros(batch_size, cfg.d_inner, cfg.d_state, device=device, dtype=torch.float32) for _ in model.layers
        ],
    )


def mixer_step(mixer: "MambaMixer", hidden: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor):
    """One position through one mixer: hidden (b, d) -> (b, d); updates conv_state and ssm_state in place."""
    xz = mixer.in_proj(hidden)  # (b, 2*d_inner)
    x, z = xz.chunk(2, dim=-1)  # (b, d_inner) each

    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[..., -1] = x.to(conv_state.dtype)
    x = (conv_state * mixer.conv1d.weight[:, 0, :]).sum(-1)  # (b, d_inner, d_conv) -> (b, d_inner)
    if mixer.conv1d.bias is not None:
        x = x + mixer.conv1d.bias
    x = F.silu(x)

    x_dbl = mixer.x_proj(x)  # (b, r + 2n)
    dt, B, C = x_dbl.split([mixer.dt_rank, mixer.d_state, mixer.d_state], dim=-1)  # (b, r), (b, n), (b, n)
    delta = F.softplus(F.linear(dt, mixer.dt_proj.weight).float() + mixer.dt_proj.bias.float())  # (b, d_inner)
    A = -torch.exp(mixer.A_log.float())  # (d_inner, n)
    x32 = x.float()
    decay = torch.exp(delta.unsqueeze(-1) * A)  # (b, d_inner, n)
    ssm_state.copy_(decay * ssm_state + (delta * x32).unsqueeze(-1) * B.float().unsqueeze(1))
    y = (ssm_state * C.float().unsqueeze(1)).sum(-1) + mixer.D.float() * x32  # (b, d_inner)
    y = y * F.silu(z.float())
    return mixer.out_proj(y.to(x.dtype))  # (b, d)


def _check_cache(model: "MambaLM", cache: InferenceCache, batch_size: int) -> None:
    if not isinstance(cache, InferenceCache):
        raise ValueError(f"cache must be an InferenceCache from allocate_cache, got {type(cache).__name__}")
    if len(cache.ssm_states) != len(model.layers):
        raise ValueError(f"cache has {len(cache.ssm_states)} layers but the model has {len(model.layers)}")
    if cache.batch_size != batch_size:
        raise ValueError(f"cache was allocated for batch size {cache.batch_size}, got {batch_size} tokens")


@torch.no_grad()
def step(model: "MambaLM", token_ids: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
    """Consume one token per sequence: token_ids (b,) -> next-token logits (b, V); advances `cache`."""
    model._check_ids(token_ids, ndim=1)
    _check_cache(model, cache, token_ids.shape[0])
    residual = model.embedding(token_ids)  # (b, d)
    if model.config.residual_in_fp32:
        residual = residual.float()
    for layer, conv_state, ssm_state in zip(model.layers, cache.conv_states, cache.ssm_states):
        out = mixer_step(layer.mixer, layer.norm(residual), conv_state, ssm_state)
        residual = residual + out.to(residual.dtype)
    cache.seqlen_offset += 1
    return model.lm_head(model.norm_f(residual))  # (b, V)


@torch.no_grad()
def prefill(model: "MambaLM", input_ids: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
    """Consume a whole chunk with the parallel scan, continuing from and updating `cache`.

    input_ids (b, l) -> logits (b, l, V). Calling it on consecutive chunks equals one forward over their
    concatenation; it is how a long prompt enters the cache without l separate steps."""
    model._check_ids(input_ids)
    _check_cache(model, cache, input_ids.shape[0])
    residual = model.embedding(input_ids)  # (b, l, d)
    if model.config.residual_in_fp32:
        residual = residual.float()
    for i, layer in enumerate(model.layers):
        residual, conv_state, ssm_state = layer(
            residual, cache.conv_states[i], cache.ssm_states[i], return_state=True
        )
        cache.conv_states[i].copy_(conv_state)
        cache.ssm_states[i].copy_(ssm_state)
    cache.seqlen_offset += input_ids.shape[1]
    return model.lm_head(model.norm_f(residual))  # (b, l, V)


def _sample(logits: torch.Tensor, allowed: tuple[int, int], temperature: float, top_k, generator) -> torch.Tensor:
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
    model._check_ids(prompt_ids)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    allowed = tokenizer_from_name(model.config.tokenizer).sampleable_ids
    cache = allocate_cache(model, prompt_ids.shape[0])
    logits = prefill(model, prompt_ids, cache)[:, -1]  # (b, V)
    out = [prompt_ids]
    for i in range(max_new_tokens):
        token = _sample(logits, allowed, temperature, top_k, generator).to(prompt_ids.dtype)  # (b,)
        out.append(token.unsqueeze(-1))
        if i + 1 < max_new_tokens:
            logits = step(model, token, cache)
    return torch.cat(out, dim=-1)  # (b, l0 + max_new_tokens)
