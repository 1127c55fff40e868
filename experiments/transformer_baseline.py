"""The comparison Transformer for experiments/bench_model.py (kept out of the package: it is a yardstick).

Decoder-only, pre-norm (LayerNorm), rotary positions, causal `scaled_dot_product_attention` (the flash backend on
CUDA via torch.nn.attention.sdpa_kernel), GELU MLP of 4x width, LM head tied to the embedding. The default size
(5 layers of width 256, 4 heads of 64) has about as many parameters as the 3.5M-parameter MambaLM (8 x 256).

Generation uses a static KV cache: `prefill` fills it from a prompt, `step` appends one token per sequence.
`StaticDecoder` is the same decode with nothing that changes shape from token to token (the position is a device
tensor, attention runs over the whole cache under a mask), so a block of steps can be captured in one CUDA graph,
the treatment mambadna's own decoder gets: the comparison is then of the models, not of launch overheads.
Symbols: b batch, l length, L cache length, d width, h heads, e head width (d / h), V vocabulary.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


@dataclass
class TransformerConfig:
    d_model: int = 256
    n_layer: int = 5
    n_head: int = 4
    vocab_size: int = 16
    mlp_ratio: int = 4
    rope_base: float = 10000.0

    def __post_init__(self):
        if self.d_model % self.n_head or (self.d_model // self.n_head) % 2:
            raise ValueError(f"d_model ({self.d_model}) must split into n_head ({self.n_head}) heads of even width")


def attention_backend(device: torch.device):
    """Flash attention on CUDA (fails loudly rather than silently falling back to O(l^2) memory); default on CPU."""
    return sdpa_kernel(SDPBackend.FLASH_ATTENTION) if device.type == "cuda" else nullcontext()


def rotate(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Rotary position embedding: x (b, h, l, e) rotated by angle position * base^(-2i/e), pairs (i, i + e/2)."""
    e = x.shape[-1]
    inv_freq = base ** (-torch.arange(0, e, 2, device=x.device, dtype=torch.float32) / e)  # (e/2,)
    angles = positions.float()[:, None] * inv_freq[None, :]  # (l, e/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., : e // 2], x[..., e // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (b, h, l, e)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        d = cfg.d_model
        self.cfg = cfg
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.mlp_ratio * d), nn.GELU(), nn.Linear(cfg.mlp_ratio * d, d))

    def forward(self, x: torch.Tensor, start: int = 0, cache: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x (b, l, d) at positions start..start+l-1 -> (b, l, d). With `cache` (k, v) (b, h, L, e) the new keys and
        values are written at [start, start+l) and attention runs over [0, start+l)."""
        b, l, d = x.shape
        h = self.cfg.n_head
        if l > 1 and start != 0:
            raise ValueError("a multi-token call must start at position 0 (prefill); continue with one-token steps")
        q, k, v = self.qkv(self.norm1(x)).view(b, l, 3, h, d // h).permute(2, 0, 3, 1, 4)  # 3 x (b, h, l, e)
        positions = torch.arange(start, start + l, device=x.device)
        q, k = rotate(q, positions, self.cfg.rope_base), rotate(k, positions, self.cfg.rope_base)
        if cache is not None:
            cache[0][:, :, start : start + l] = k
            cache[1][:, :, start : start + l] = v
            k, v = cache[0][:, :, : start + l], cache[1][:, :, : start + l]  # (b, h, start + l, e)
        # a one-token step attends to everything cached (no mask); a prefill is causal from position 0
        with attention_backend(x.device):
            att = F.scaled_dot_product_attention(q, k, v, is_causal=l > 1)  # (b, h, l, e)
        x = x + self.proj(att.transpose(1, 2).reshape(b, l, d))
        return x + self.mlp(self.norm2(x))


class TransformerLM(nn.Module):
    def __init__(self, cfg: TransformerConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or TransformerConfig()
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.lm_head.weight = self.embedding.weight

    def forward(self, input_ids: torch.Tensor, checkpoint_blocks: bool = False) -> torch.Tensor:
        """input_ids (b, l) -> logits (b, l, V); `checkpoint_blocks` recomputes each block in the backward."""
        x = self.embedding(input_ids)  # (b, l, d)
        for layer in self.layers:
            if checkpoint_blocks and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return self.lm_head(self.norm_f(x))  # (b, l, V)

    def allocate_cache(self, batch_size: int, max_len: int, device=None, dtype=torch.bfloat16):
        cfg = self.cfg
        shape = (batch_size, cfg.n_head, max_len, cfg.d_model // cfg.n_head)
        device = device or self.embedding.weight.device
        return [(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))
                for _ in self.layers]

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, cache) -> torch.Tensor:
        """Fill `cache` with a prompt (b, l) -> logits of its last position (b, V)."""
        x = self.embedding(input_ids)  # (b, l, d)
        for layer, kv in zip(self.layers, cache):
            x = layer(x, 0, kv)
        return self.lm_head(self.norm_f(x[:, -1]))  # (b, d) -> (b, V)

    @torch.no_grad()
    def step(self, token_ids: torch.Tensor, position: int, cache) -> torch.Tensor:
        """One token per sequence at `position` (b,) -> next-token logits (b, V)."""
        x = self.embedding(token_ids[:, None])  # (b, 1, d)
        for layer, kv in zip(self.layers, cache):
            x = layer(x, position, kv)
        return self.lm_head(self.norm_f(x[:, 0]))  # (b, V)

    @torch.no_grad()
    def step_static(self, token_ids: torch.Tensor, position: torch.Tensor, cache) -> torch.Tensor:
        """`step` with the position as a (1,) device tensor: keys and values are written with index_copy_ and the
        attention covers the whole cache (b, h, L, e), masked past `position`. Graph-capturable."""
        x = self.embedding(token_ids[:, None])  # (b, 1, d)
        b, h = x.shape[0], self.cfg.n_head
        L = cache[0][0].shape[2]
        visible = (torch.arange(L, device=x.device) <= position)[None, None, None, :]  # (1, 1, 1, L)
        for layer, (k_cache, v_cache) in zip(self.layers, cache):
            q, k, v = layer.qkv(layer.norm1(x)).view(b, 1, 3, h, -1).permute(2, 0, 3, 1, 4)  # 3 x (b, h, 1, e)
            q, k = rotate(q, position, self.cfg.rope_base), rotate(k, position, self.cfg.rope_base)
            k_cache.index_copy_(2, position, k.to(k_cache.dtype))
            v_cache.index_copy_(2, position, v.to(v_cache.dtype))
            att = F.scaled_dot_product_attention(q.to(k_cache.dtype), k_cache, v_cache, attn_mask=visible)
            x = x + layer.proj(att.transpose(1, 2).reshape(b, 1, -1).to(x.dtype))
            x = x + layer.mlp(layer.norm2(x))
        return self.lm_head(self.norm_f(x[:, 0]))  # (b, V)


class StaticDecoder:
    """Greedy decode of `block` tokens per call from static buffers; `graph=True` captures the block once."""

    def __init__(self, model: TransformerLM, cache, block: int = 32, graph: bool = True):
        self.model, self.cache, self.block = model, cache, block
        b = cache[0][0].shape[0]
        device = cache[0][0].device
        self.token = torch.zeros(b, dtype=torch.long, device=device)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.graph_mode, self._graph = graph, None

    def _run_block(self) -> None:
        for _ in range(self.block):
            logits = self.model.step_static(self.token, self.position, self.cache)  # (b, V)
            self.token.copy_(logits.argmax(-1))
            self.position.add_(1)

    @torch.no_grad()
    def decode(self, first_token: torch.Tensor, position: int, n_blocks: int) -> None:
        """Continue after `first_token` (b,) at `position`; the cache holds positions [0, position)."""
        self.token.copy_(first_token)
        self.position.fill_(position)
        if self.graph_mode and self._graph is None:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._run_block()  # warm-up; it writes cache slots the timed run overwrites
            torch.cuda.current_stream().wait_stream(side)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._run_block()
            self.token.copy_(first_token)
            self.position.fill_(position)
        for _ in range(n_blocks):
            if self._graph is not None:
                self._graph.replay()
            else:
                self._run_block()

