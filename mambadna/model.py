"""Mamba language model for DNA, in the style of mamba-minimal (one readable file, the paper's equations).

Glossary (shape comments use these; see docs/ARCHITECTURE.md):
    b        batch size
    l        sequence length (bases for the nucleotide tokenizer)
    d        d_model, the residual width              (the scan's own "d" is d_inner = expand * d_model)
    d_inner  width inside a mixer, where the scan runs
    n        d_state, the SSM state size per channel
    r        dt_rank, the low rank of the Δ projection
    Δ        per-position, per-channel step size (delta), softplus-ed inside the scan
    V        vocab_size

Mixer (Mamba paper, Fig. 3 / Alg. 2): in_proj -> causal depthwise conv1d -> SiLU -> x_proj gives (Δ, B, C) from
the input itself (the "selective" part) -> selective scan gated by SiLU(z) -> out_proj. Blocks are pre-norm
residual: h = h + Mixer(RMSNorm(h)).

State: a layer's whole memory of the past is a `LayerState` (its last d_conv conv inputs and its SSM state h).
`MambaMixer.forward(x, state)` runs a chunk in parallel and returns the state after it; `MambaMixer.step` consumes
one position and updates the state in place. `MambaLM.trunk` is the one place that runs the layers: the full
forward, prefill, the recurrent step, sequence-chunked recomputation (mambadna/chunking.py) and truncated BPTT
(mambadna/tbptt.py) all call it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from mambadna import inference
from mambadna.checkpoint import Pretrained
from mambadna.chunking import run_chunked
from mambadna.config import POOLINGS, MambaConfig
from mambadna.kernels import selective_scan, step_kernels


@dataclass
class LayerState:
    """One layer's recurrent state; a model's state is a list of these, one per layer."""

    conv: torch.Tensor  # (b, d_inner, d_conv): the last d_conv conv inputs (left zero-padded), model dtype
    ssm: torch.Tensor  # (b, d_inner, n): h after the last position, fp32

    def detach(self) -> "LayerState":
        return LayerState(self.conv.detach(), self.ssm.detach())

    def copy_(self, other: "LayerState") -> "LayerState":
        self.conv.copy_(other.conv)
        self.ssm.copy_(other.ssm)
        return self

    def reset_rows(self, reset: torch.Tensor) -> "LayerState":
        """Zero the rows where `reset` (b,) bool is true: those sequences start afresh."""
        keep = ~reset.to(device=self.ssm.device, dtype=torch.bool)[:, None, None]  # (b, 1, 1)
        return LayerState(self.conv * keep.to(self.conv.dtype), self.ssm * keep)


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(self.weight.dtype)


class MambaMixer(nn.Module):
    """One selective-SSM mixer. Running chunks one after another, each from the state the previous one returned,
    equals running the whole sequence at once; `step` is the same recurrence one position at a time."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.config = config
        d, d_inner, n, r = config.d_model, config.d_inner, config.d_state, config.dt_rank_resolved
        self.d_inner, self.d_state, self.dt_rank, self.d_conv = d_inner, n, r, config.d_conv

        self.in_proj = nn.Linear(d, 2 * d_inner, bias=config.bias)
        self.conv1d = nn.Conv1d(
            d_inner, d_inner, config.d_conv, groups=d_inner, padding=config.d_conv - 1, bias=config.conv_bias
        )
        self.x_proj = nn.Linear(d_inner, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, d_inner, bias=True)
        # S4D-real init: A = -(1..n) for every channel; kept as log so A stays negative under any update.
        A = torch.arange(1, n + 1, dtype=torch.float32).repeat(d_inner, 1)  # (d_inner, n)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d, bias=config.bias)
        # mamba_ssm convention: optimizers should not weight-decay these.
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.reset_dt_proj()

    @torch.no_grad()
    def reset_dt_proj(self) -> None:
        """Δ init from mamba_ssm: weight ~ U(±r^-0.5); bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max]."""
        cfg = self.config
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        log_dt = torch.rand(self.d_inner) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min)
        dt = torch.exp(log_dt).clamp(min=cfg.dt_init_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.dt_proj.bias._no_reinit = True

    def zero_state(self, batch_size: int, device, dtype) -> LayerState:
        return LayerState(
            torch.zeros(batch_size, self.d_inner, self.d_conv, device=device, dtype=dtype),
            torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=torch.float32),
        )

    def forward(self, hidden: torch.Tensor, state: LayerState | None = None) -> tuple[torch.Tensor, LayerState]:
        """hidden (b, l, d), continuing from `state` (None: start of sequence) -> (out (b, l, d), state after it)."""
        xz = self.in_proj(hidden)  # (b, l, 2*d_inner)
        x, z = xz.transpose(1, 2).chunk(2, dim=1)  # (b, d_inner, l) each
        x_conv, conv_state = self.conv(x, None if state is None else state.conv)
        x_conv = F.silu(x_conv)
        delta, B, C = self.ssm_params(x_conv)
        y, ssm_state = selective_scan(
            x_conv, delta, self.A(), B, C, self.D.float(), z=z,
            delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
            initial_state=None if state is None else state.ssm, return_final_state=True,
            backend=self.config.scan_backend,
        )  # (b, d_inner, l), (b, d_inner, n)
        return self.out_proj(y.transpose(1, 2)), LayerState(conv_state, ssm_state)  # (b, l, d)

    def step(self, hidden: torch.Tensor, state: LayerState, fused: bool = False) -> torch.Tensor:
        """One position: hidden (b, d) -> (b, d); updates `state` in place (so a captured CUDA graph can replay it).
        `fused` runs the same step as two Triton kernels (mambadna/kernels/step_triton.py); this eager code is
        their reference."""
        if fused:
            return self.out_proj(self.fused_core(hidden, state))  # (b, d)
        xz = self.in_proj(hidden)  # (b, 2*d_inner)
        x, z = xz.chunk(2, dim=-1)  # (b, d_inner) each
        state.conv.copy_(torch.roll(state.conv, shifts=-1, dims=-1))
        state.conv[..., -1] = x.to(state.conv.dtype)
        x = (state.conv * self.conv1d.weight[:, 0, :]).sum(-1)  # (b, d_inner, d_conv) -> (b, d_inner)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias
        x = F.silu(x)
        x_dbl = self.x_proj(x)  # (b, r + 2n)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)  # (b, r), (b, n), (b, n)
        delta = F.softplus(F.linear(dt, self.dt_proj.weight).float() + self.dt_proj.bias.float())  # (b, d_inner)
        x32 = x.float()
        decay = torch.exp(delta.unsqueeze(-1) * self.A())  # (b, d_inner, n)
        state.ssm.copy_(decay * state.ssm + (delta * x32).unsqueeze(-1) * B.float().unsqueeze(1))
        y = (state.ssm * C.float().unsqueeze(1)).sum(-1) + self.D.float() * x32  # (b, d_inner)
        y = y * F.silu(z.float())
        return self.out_proj(y.to(x.dtype))  # (b, d)

    def fused_core(self, hidden: torch.Tensor, state: LayerState) -> torch.Tensor:
        """The fused step up to (not including) out_proj: hidden (b, d) -> gated y (b, d_inner)."""
        fk = step_kernels()
        xz = self.in_proj(hidden)  # (b, 2*d_inner)
        x = fk.conv_step(xz, state.conv, self.conv1d.weight, self.conv1d.bias, self.d_inner)  # (b, d_inner)
        return fk.ssm_step(x, xz, self.x_proj(x), self.dt_proj.weight, self.dt_proj.bias, self.A_log, self.D,
                           state.ssm)  # (b, d_inner)

    def A(self) -> torch.Tensor:
        return -torch.exp(self.A_log.float())  # (d_inner, n)

    def conv(self, x: torch.Tensor, conv_state: torch.Tensor | None = None):
        """Causal depthwise conv. x (b, d_inner, l) -> (y (b, d_inner, l), last d_conv inputs (b, d_inner, d_conv)).

        The state holds the last d_conv *inputs* (left zero-padded), the same layout `step` uses."""
        l = x.shape[-1]
        if conv_state is None:
            y = self.conv1d(x)[..., :l]  # (b, d_inner, l + d_conv - 1) -> (b, d_inner, l)
            history = x
        else:
            history = torch.cat([conv_state[..., 1:].to(x.dtype), x], dim=-1)  # (b, d_inner, d_conv - 1 + l)
            y = F.conv1d(history, self.conv1d.weight, self.conv1d.bias, groups=self.d_inner)  # (b, d_inner, l)
        new_state = F.pad(history, (self.d_conv - history.shape[-1], 0))[..., -self.d_conv :]  # (b, d_inner, d_conv)
        return y, new_state

    def ssm_params(self, x: torch.Tensor):
        """x (b, d_inner, l) -> low-rank Δ before dt_proj's bias (b, d_inner, l), B (b, n, l), C (b, n, l)."""
        x_dbl = self.x_proj(x.transpose(1, 2))  # (b, l, r + 2n)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)  # (b, l, r), (b, l, n), (b, l, n)
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # (b, d_inner, l); bias is added in the scan
        return delta, B.transpose(1, 2), C.transpose(1, 2)  # (b, n, l) each


class MambaBlock(nn.Module):
    """Pre-norm residual block: residual <- residual + Mixer(RMSNorm(residual))."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.norm = RMSNorm(config.d_model, eps=config.norm_eps)
        self.mixer = MambaMixer(config)

    def forward(self, residual: torch.Tensor, state: LayerState | None = None) -> tuple[torch.Tensor, LayerState]:
        out, state = self.mixer(self.norm(residual), state)
        return residual + out.to(residual.dtype), state

    def step(self, residual: torch.Tensor, state: LayerState, fused: bool = False) -> torch.Tensor:
        if not fused:
            return residual + self.mixer.step(self.norm(residual), state).to(residual.dtype)
        y = self.mixer.fused_core(step_kernels().rmsnorm(residual, self.norm.weight, self.norm.eps), state)
        proj = self.mixer.out_proj
        if y.dtype != residual.dtype or proj.bias is not None:
            return residual + proj(y).to(residual.dtype)
        return torch.addmm(residual, y, proj.weight.t())  # residual + out_proj(y) in one launch


class MambaLM(Pretrained, nn.Module):
    """Embedding -> n_layer MambaBlocks -> RMSNorm -> LM head (tied to the embedding by default).

    Two attributes change how, not what, it computes (so they are not config fields): `activation_checkpointing`
    recomputes each block in the backward instead of storing its activations; `fused_step` (None: on CUDA when
    Triton loads) runs the recurrent step through the fused Triton kernels."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        if not isinstance(config, MambaConfig):
            raise ValueError(f"MambaLM needs a MambaConfig, got {type(config).__name__}")
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(MambaBlock(config) for _ in range(config.n_layer))
        self.norm_f = RMSNorm(config.d_model, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.activation_checkpointing = False
        self.fused_step: bool | None = None
        self._init_weights()
        if config.tie_embeddings:
            self.lm_head.weight = self.embedding.weight

    @torch.no_grad()
    def _init_weights(self) -> None:
        """mamba_ssm's _init_weights: Linear biases zero (except dt_proj), embedding N(0, 0.02), and out_proj
        rescaled by 1/sqrt(n_layer) (GPT-2 style; one residual branch per layer) so the residual stream's
        variance does not grow with depth."""
        for module in self.modules():
            bias = getattr(module, "bias", None) if isinstance(module, nn.Linear) else None
            if bias is not None and not getattr(bias, "_no_reinit", False):
                nn.init.zeros_(bias)
        nn.init.normal_(self.embedding.weight, std=0.02)
        for layer in self.layers:
            w = layer.mixer.out_proj.weight
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            w /= math.sqrt(self.config.n_layer)

    # ---- state ----

    def zero_states(self, batch_size: int, device=None, dtype=None) -> list[LayerState]:
        """Every layer's state at the start of a sequence; device and dtype default to the parameters'."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        param = self.embedding.weight
        device = param.device if device is None else device
        dtype = param.dtype if dtype is None else dtype
        return [layer.mixer.zero_state(batch_size, device, dtype) for layer in self.layers]

    def check_states(self, states, batch_size: int, n_layers: int | None = None) -> None:
        """Raise ValueError unless `states` is one LayerState per layer (of the first `n_layers`) with this model's
        shapes."""
        cfg = self.config
        n_layers = cfg.n_layer if n_layers is None else n_layers
        if not isinstance(states, (list, tuple)) or not all(isinstance(s, LayerState) for s in states):
            raise ValueError(f"states must be a list of LayerState (from zero_states), got {type(states).__name__}")
        if len(states) != n_layers:
            raise ValueError(f"states has {len(states)} layers but the model runs {n_layers}")
        want_conv, want_ssm = (batch_size, cfg.d_inner, cfg.d_conv), (batch_size, cfg.d_inner, cfg.d_state)
        for i, s in enumerate(states):
            if tuple(s.conv.shape) != want_conv or tuple(s.ssm.shape) != want_ssm:
                if s.ssm.dim() == 3 and s.ssm.shape[0] != batch_size:
                    raise ValueError(f"states hold batch size {s.ssm.shape[0]}, got {batch_size} sequences")
                raise ValueError(f"states[{i}] must be conv {want_conv} and ssm {want_ssm}, got conv "
                                 f"{tuple(s.conv.shape)} and ssm {tuple(s.ssm.shape)}")

    def check_ids(self, input_ids: torch.Tensor, ndim: int = 2) -> None:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.long, torch.int32):
            got = getattr(input_ids, "dtype", type(input_ids).__name__)
            raise ValueError(f"input_ids must be an int64/int32 tensor, got {got}")
        if input_ids.dim() != ndim:
            want = "(b, l)" if ndim == 2 else "(b,)"
            raise ValueError(f"input_ids must be {want}, got shape {tuple(input_ids.shape)}")
        if input_ids.numel() == 0:
            raise ValueError(f"input_ids is empty: shape {tuple(input_ids.shape)}")
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= self.config.vocab_size:
            raise ValueError(f"input_ids must lie in [0, {self.config.vocab_size}), got values {lo}..{hi}")

    # ---- the trunk ----

    def trunk(self, input_ids: torch.Tensor, states: list[LayerState] | None = None, step: bool = False,
              n_layers: int | None = None, check: bool = True):
        """Run the layers, carrying state. The one place the layers are run.

        input_ids (b, l) [(b,) with `step`], `states` to continue from (None: start of sequence; required with
        `step`, which updates them in place) -> (residual stream after the last block run, before the final norm,
        (b, l, d) [(b, d)]; the states after the last position). `n_layers` runs only the first n blocks (an
        intermediate layer's output; `states` then cover those blocks). `check=False` skips the input checks, which
        read values back to the host: a CUDA graph capture cannot."""
        n_layers = len(self.layers) if n_layers is None else n_layers
        if check:
            if not 1 <= n_layers <= len(self.layers):
                raise ValueError(f"n_layers must be in [1, {len(self.layers)}], got {n_layers}")
            self.check_ids(input_ids, ndim=1 if step else 2)
            if states is not None or step:
                self.check_states(states, input_ids.shape[0], n_layers)
        residual = self.embedding(input_ids)  # (b, l, d) or (b, d)
        if self.config.residual_in_fp32:
            residual = residual.float()
        layers = self.layers[:n_layers]
        if step:
            fused = self._fused(residual)
            for layer, state in zip(layers, states):
                residual = layer.step(residual, state, fused)
            return residual, states
        recompute = self.activation_checkpointing and torch.is_grad_enabled()
        new_states = []
        for layer, state in zip(layers, states or [None] * n_layers):
            if recompute:
                residual, state = checkpoint(layer, residual, state, use_reentrant=False)
            else:
                residual, state = layer(residual, state)
            new_states.append(state)
        return residual, new_states

    def hidden_states(self, input_ids: torch.Tensor, states: list[LayerState] | None = None) -> torch.Tensor:
        """input_ids (b, l) -> final-normed hidden states (b, l, d)."""
        return self.norm_f(self.trunk(input_ids, states)[0])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (b, l) -> next-token logits (b, l, V)."""
        return self.lm_head(self.hidden_states(input_ids))  # (b, l, V)

    def step(self, token_ids: torch.Tensor, states: list[LayerState], check: bool = True) -> torch.Tensor:
        """Consume one token per sequence: token_ids (b,) -> next-token logits (b, V); advances `states` in place."""
        with torch.no_grad():
            residual, _ = self.trunk(token_ids, states, step=True, check=check)
            if self._fused(residual):
                return self.lm_head(step_kernels().rmsnorm(residual, self.norm_f.weight, self.norm_f.eps))
            return self.lm_head(self.norm_f(residual))  # (b, V)

    def _fused(self, x: torch.Tensor) -> bool:
        return self.fused_step if self.fused_step is not None else x.is_cuda and step_kernels() is not None

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, pooling: str = "mean",
              chunk_bp: int | None = None):
        """-> (per_position (b, l, d) or None with `chunk_bp`, pooled (b, d)). See `pool` for the modes; with
        `chunk_bp` the sequence runs in chunks carrying state and only the pooled vectors are built."""
        if chunk_bp is not None:
            return None, pooled_chunked(self, input_ids, attention_mask, pooling, chunk_bp)
        hidden = self.hidden_states(input_ids)
        return hidden, pool(hidden, attention_mask, pooling)

    def generate(self, prompt_ids, max_new_tokens: int, temperature: float = 1.0, top_k=None, generator=None):
        return inference.generate(self, prompt_ids, max_new_tokens, temperature, top_k, generator)

    def init_kwargs(self) -> dict:
        """Constructor arguments besides the config, saved in config.json."""
        return {}


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
        raise ValueError("attention_mask must be right-padded (real tokens first, then padding) for a causal model")
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


def _check_pooling(pooling: str) -> None:
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
    _check_pooling(pooling)
    b, l, _ = hidden.shape
    mask = check_mask(attention_mask, b, l, hidden.device)
    return pool_finish(pool_partial(hidden, mask, _next_mask(mask)[:, 1:], 0, pooling), mask, pooling)


def pooled_chunked(model: MambaLM, input_ids: torch.Tensor, attention_mask, pooling: str, chunk_bp: int):
    """`pool(model.hidden_states(input_ids), ...)` computed chunk by chunk (mambadna/chunking.py): activation
    memory grows with `chunk_bp`, not with l, and with grad each chunk is recomputed in the backward."""
    _check_pooling(pooling)
    model.check_ids(input_ids)
    b, l = input_ids.shape
    mask = check_mask(attention_mask, b, l, input_ids.device)
    after = _next_mask(mask)  # (b, l + 1)

    def share(residual, start, end):  # residual (b, c, d) of positions [start, end)
        return (pool_partial(model.norm_f(residual), mask[:, start:end], after[:, start + 1 : end + 1], start,
                             pooling),)

    (total,), _ = run_chunked(model, input_ids, chunk_bp, share)
    return pool_finish(total, mask, pooling)


class MambaClassifier(Pretrained, nn.Module):
    """Sequence classifier: a MambaLM backbone, pooling over real tokens, then one Linear layer."""

    def __init__(self, config: MambaConfig, num_classes: int, pooling: str = "last", class_names=None):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
        self.config, self.num_classes, self.pooling = config, num_classes, pooling
        self.class_names = list(class_names) if class_names is not None else None
        self.backbone = MambaLM(config)
        if not config.tie_embeddings:
            # The LM head is unused here; freezing it keeps DDP from complaining about parameters without grads.
            self.backbone.lm_head.weight.requires_grad_(False)
        self.head = nn.Linear(config.d_model, num_classes)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                chunk_bp: int | None = None) -> torch.Tensor:
        """input_ids (b, l), attention_mask (b, l) bool, right-padded -> logits (b, num_classes). `chunk_bp` runs
        the backbone chunk by chunk with recomputation: the same logits and gradients in O(chunk) memory."""
        _, pooled = self.backbone.embed(input_ids, attention_mask, self.pooling, chunk_bp)  # (b, d)
        return self.head(pooled)  # (b, num_classes)

    def init_kwargs(self) -> dict:
        kwargs = {"num_classes": self.num_classes, "pooling": self.pooling}
        if self.class_names is not None:
            kwargs["class_names"] = self.class_names
        return kwargs

    @classmethod
    def from_pretrained_backbone(cls, directory, num_classes: int, pooling: str = "last", map_location="cpu",
                                 class_names=None):
        """A new classifier (fresh head) whose backbone holds the weights of a saved MambaLM directory."""
        backbone = MambaLM.from_pretrained(directory, map_location=map_location)
        model = cls(backbone.config, num_classes, pooling, class_names)
        model.backbone.load_state_dict(backbone.state_dict())
        return model.to(map_location)
