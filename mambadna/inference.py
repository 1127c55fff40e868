"""Generation from a MambaLM: prefill, sampling and the decode loop, through the model's public methods.

A Mamba layer's whole memory of the past is its `LayerState` (conv state (b, d_inner, d_conv) and SSM state
(b, d_inner, n) fp32), so generation costs O(1) memory and time per token whatever the context length, unlike
attention's growing KV cache. What bounds a small model's decode is then the launch of its ~20 small kernels per
layer and token, so on CUDA the decoder captures a block of `block` steps (step, sample, store) in one CUDA graph
and replays it: one launch per block instead of thousands.

Sampling is Gumbel-max (argmax of logits / T + Gumbel noise, the same distribution as softmax sampling), with the
uniform noise drawn from the caller's generator one block at a time, so the eager and the graph-captured decoder
consume the same random numbers and give the same tokens. Symbols as in mambadna/model.py; V vocab, K block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mambadna.tokenizer import tokenizer_from_name

if TYPE_CHECKING:
    from mambadna.model import LayerState, MambaLM

BLOCK_STEPS = 32  # decode steps per captured graph: launch overhead / 32, capture time and memory still small


@torch.no_grad()
def prefill(model: "MambaLM", input_ids: torch.Tensor, states: list["LayerState"]) -> torch.Tensor:
    """Consume a whole chunk with the parallel scan, continuing from `states` and updating them in place.

    input_ids (b, l) -> logits (b, l, V). Calling it on consecutive chunks equals one forward over their
    concatenation; it is how a long prompt enters the state without l separate steps."""
    residual, new_states = model.trunk(input_ids, states)
    for state, new in zip(states, new_states):
        state.copy_(new)
    return model.lm_head(model.norm_f(residual))  # (b, l, V)


def allowed_bias(vocab_size: int, allowed: tuple[int, int], device) -> torch.Tensor:
    """(V,) fp32: 0 for the ids that may be sampled, -inf elsewhere (added to the logits, one launch a token)."""
    ids = torch.arange(vocab_size, device=device)
    return torch.zeros(vocab_size, device=device).masked_fill((ids < allowed[0]) | (ids >= allowed[1]),
                                                              float("-inf"))


def sample(logits: torch.Tensor, bias: torch.Tensor, temperature: float, top_k, noise: torch.Tensor, out=None):
    """logits (b, V), `allowed_bias` (V,), uniform noise (b, V) in (0, 1) -> token ids (b,) (into `out` if
    given) drawn from the ids the bias allows; `top_k` at most the number of those ids (nothing here reads values
    back to the host, so a CUDA graph can capture it)."""
    logits = logits.float() + bias
    if temperature == 0:
        return torch.argmax(logits, -1, out=out)
    if top_k is not None:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (b, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    gumbel = -torch.log(-torch.log(noise.clamp(1e-20, 1.0 - 1e-7)))  # (b, V)
    return torch.argmax(logits / temperature + gumbel, -1, out=out)  # (b,)


def check_sampling(max_new_tokens, temperature, top_k) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")


class Decoder:
    """Decodes `block` tokens at a time from static buffers (states, current token, noise, output), so that the
    block can be captured once as a CUDA graph (`graph=True`) and replayed; eagerly it runs the same code."""

    def __init__(self, model: "MambaLM", batch_size: int, temperature: float = 1.0, top_k: int | None = None,
                 block: int = BLOCK_STEPS, graph: bool | None = None):
        param = model.embedding.weight
        self.model, self.block, self.temperature = model, block, temperature
        allowed = tokenizer_from_name(model.config.tokenizer).sampleable_ids
        self.bias = allowed_bias(model.config.vocab_size, allowed, param.device)
        self.top_k = None if top_k is None else min(top_k, allowed[1] - allowed[0])
        self.graph_mode = param.is_cuda if graph is None else graph
        if self.graph_mode and not param.is_cuda:
            raise ValueError("CUDA-graph decoding needs the model on a CUDA device")
        vocab = model.config.vocab_size
        self.states = model.zero_states(batch_size)
        self.token = torch.zeros(batch_size, dtype=torch.long, device=param.device)
        self.noise = torch.rand(block, batch_size, vocab, device=param.device)
        self.out = torch.zeros(block, batch_size, dtype=torch.long, device=param.device)
        self._graph: torch.cuda.CUDAGraph | None = None

    def _run_block(self) -> None:
        token = self.token
        for k in range(self.block):
            logits = self.model.step(token, self.states, check=False)  # (b, V)
            token = sample(logits, self.bias, self.temperature, self.top_k, self.noise[k], out=self.out[k])
        self.token.copy_(token)

    def _capture(self) -> None:
        # warm-up runs (kernel compilation, allocator) change the buffers, so keep and restore them
        saved = [(s.conv.clone(), s.ssm.clone()) for s in self.states], self.token.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._run_block()
        torch.cuda.current_stream().wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._run_block()
        for state, (conv, ssm) in zip(self.states, saved[0]):
            state.conv.copy_(conv)
            state.ssm.copy_(ssm)
        self.token.copy_(saved[1])

    @torch.no_grad()
    def decode(self, states: list["LayerState"], first_token: torch.Tensor, n: int, generator=None) -> torch.Tensor:
        """Continue from `states` (copied in) after `first_token` (b,): -> the next n tokens (b, n)."""
        for mine, given in zip(self.states, states):
            mine.copy_(given)
        self.token.copy_(first_token)
        if self.graph_mode and self._graph is None:
            self._capture()
        blocks = []
        for _ in range(-(-n // self.block)):
            self.noise.copy_(torch.rand(self.noise.shape, generator=generator, device=self.noise.device))
            if self._graph is not None:
                self._graph.replay()
            else:
                self._run_block()
            blocks.append(self.out.clone())
        if not blocks:
            return first_token.new_zeros(first_token.shape[0], 0)
        return torch.cat(blocks, 0)[:n].t()  # (b, n)


@torch.no_grad()
def generate(
    model: "MambaLM",
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    graph: bool | None = None,
) -> torch.Tensor:
    """Sample continuations: prompt_ids (b, l0) -> (b, l0 + max_new_tokens).

    Only the tokenizer's real symbols are sampled (A C G T N for the nucleotide tokenizer; never PAD/BOS/EOS/
    MASK/UNK or vocabulary padding). temperature 0 means greedy; top_k keeps the k most likely ids. `generator`
    must live on the model's device. `graph` (default: on CUDA) decodes through captured CUDA graphs."""
    model.check_ids(prompt_ids)
    check_sampling(max_new_tokens, temperature, top_k)
    device = model.embedding.weight.device
    prompt_ids = prompt_ids.to(device)
    if max_new_tokens == 0:
        return prompt_ids
    allowed = tokenizer_from_name(model.config.tokenizer).sampleable_ids
    bias = allowed_bias(model.config.vocab_size, allowed, device)
    states = model.zero_states(prompt_ids.shape[0])
    logits = prefill(model, prompt_ids, states)[:, -1]  # (b, V)
    noise = torch.rand(logits.shape, generator=generator, device=device)
    first = sample(logits, bias, temperature, None if top_k is None else min(top_k, allowed[1] - allowed[0]),
                   noise)  # (b,)
    block = min(BLOCK_STEPS, max(1, max_new_tokens - 1))
    decoder = Decoder(model, prompt_ids.shape[0], temperature, top_k, block=block, graph=graph)
    rest = decoder.decode(states, first, max_new_tokens - 1, generator)  # (b, n - 1)
    return torch.cat([prompt_ids, first[:, None].to(prompt_ids.dtype), rest.to(prompt_ids.dtype)], dim=-1)
