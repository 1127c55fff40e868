"""Mamba language model for DNA, in the style of mamba-minimal (readable code, the paper's equations).

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

Reading directions (Caduceus, Schiff et al. 2024), options of the same blocks (MambaConfig): `bidirectional` adds
a reverse-direction mixer to every block (BiMamba); `rc_equivariant` runs the trunk over both strands with
shared weights (RCPS), so that outputs for the reverse complement are the reverse complement of the outputs.
Either makes the model non-causal: it trains as a masked LM, and has no recurrent step or carried state. How
padding and the two strands are handled: mambadna/strands.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from mambadna import inference, strands
from mambadna.checkpoint import Pretrained
from mambadna.config import POOLINGS, MambaConfig
from mambadna.kernels import causal_conv, norm_module, selective_scan, step_kernels
from mambadna.pooling import check_mask, check_pooling, pool, pooled_chunked
from mambadna.strands import Reverser
from mambadna.tokenizer import PAD_ID


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
    """x (..., d) -> x·rsqrt(mean(x²) + eps)·weight in fp32, returned in weight's dtype; `backend`: norm_backend."""

    def __init__(self, d: int, eps: float = 1e-5, backend: str = "torch"):
        super().__init__()
        self.eps, self.backend = eps, backend
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = norm_module(self.backend, x)  # the same math in one Triton kernel each way (kernels/norm_triton.py)
        if fused is not None:
            return fused.rms_norm(x, self.weight, self.eps)
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
        y, state = self.ssm(*self.project(hidden), state)  # (b, l, d_inner) x2 -> (b, l, d_inner)
        return self.out_proj(y), state  # (b, l, d)

    def project(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """in_proj as its two halves: hidden (b, l, d) -> x, z (b, l, d_inner) each. Two products on the weight's
        row blocks instead of one and a split: the split's backward is a cat of x's and z's gradients into one
        (b, l, 2*d_inner) tensor, a strided copy that took 4% of a training step at 2^16 and 9% at 2^18 (H100,
        experiments/results/gpu_scan_h100_2026-12-07f/)."""
        w, bias, d_inner = self.in_proj.weight, self.in_proj.bias, self.d_inner
        x = F.linear(hidden, w[:d_inner], None if bias is None else bias[:d_inner])
        z = F.linear(hidden, w[d_inner:], None if bias is None else bias[d_inner:])
        return x, z

    def ssm(self, x: torch.Tensor, z: torch.Tensor, state: LayerState | None = None
            ) -> tuple[torch.Tensor, LayerState]:
        """Everything between the two projections: in_proj's halves x, z (b, l, d_inner) -> (the gated scan
        output (b, l, d_inner), the state after it). Split out so a bidirectional block can share the projections."""
        x, z = x.transpose(1, 2), z.transpose(1, 2)  # (b, d_inner, l) each
        x_conv, conv_state = self.conv(x, None if state is None else state.conv, silu=True)
        delta, B, C = self.ssm_params(x_conv)
        y, ssm_state = selective_scan(
            x_conv, delta, self.A(), B, C, self.D.float(), z=z,
            delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
            initial_state=None if state is None else state.ssm, return_final_state=True,
            backend=self.config.scan_backend, kernel=self.config.scan_kernel,
        )  # (b, d_inner, l), (b, d_inner, n)
        return y.transpose(1, 2), LayerState(conv_state, ssm_state)  # (b, l, d_inner)

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

    def conv(self, x: torch.Tensor, conv_state: torch.Tensor | None = None, silu: bool = False):
        """Causal depthwise conv. x (b, d_inner, l) -> (y (b, d_inner, l), last d_conv inputs (b, d_inner, d_conv)).

        The state holds the last d_conv *inputs* (left zero-padded), the same layout `step` uses. `silu` applies
        SiLU to y; the `conv_backend` setting picks F.conv1d or the Triton kernel (kernels.causal_conv)."""
        return causal_conv(x, self.conv1d.weight, self.conv1d.bias, conv_state, silu, self.config.conv_backend)

    def ssm_params(self, x: torch.Tensor):
        """x (b, d_inner, l) -> low-rank Δ before dt_proj's bias (b, d_inner, l), B (b, n, l), C (b, n, l)."""
        x_dbl = self.x_proj(x.transpose(1, 2))  # (b, l, r + 2n)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)  # (b, l, r), (b, l, n), (b, l, n)
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # (b, d_inner, l); bias is added in the scan
        return delta, B.transpose(1, 2), C.transpose(1, 2)  # (b, n, l) each


class MambaBlock(nn.Module):
    """Pre-norm residual block: residual <- residual + Mixer(RMSNorm(residual)).

    Bidirectional (Caduceus BiMamba): a second mixer, `mixer_rev`, reads each sequence from its last real base
    and its output, put back in order, is added to the forward mixer's. With `bidirectional_weight_tie` the two
    share in_proj and out_proj (the same modules), so the sequence is projected once and the directions are summed
    before the one out_proj (with bias=True its bias is then added once, not once per direction)."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.norm = RMSNorm(config.d_model, eps=config.norm_eps, backend=config.norm_backend)
        self.mixer = MambaMixer(config)
        self.mixer_rev = MambaMixer(config) if config.bidirectional else None
        if config.bidirectional and config.bidirectional_weight_tie:
            self.mixer_rev.in_proj, self.mixer_rev.out_proj = self.mixer.in_proj, self.mixer.out_proj

    def forward(self, residual: torch.Tensor, state: LayerState | None = None,
                reverse: Reverser | None = None) -> tuple[torch.Tensor, LayerState]:
        """residual (b, l, d) -> (b, l, d) and the forward mixer's state; `reverse` (bidirectional only) reverses
        each row's real positions."""
        hidden = self.norm(residual)
        fwd, rev = self.mixer, self.mixer_rev
        if rev is None:
            out, state = fwd(hidden, state)
        elif rev.in_proj is fwd.in_proj:  # tied: the projections are per position, so they commute with reversal
            x, z = fwd.project(hidden)  # (b, l, d_inner) each
            y, state = fwd.ssm(x, z, state)
            y_rev, _ = rev.ssm(reverse(x), reverse(z))  # (b, l, d_inner), in reversed order
            out = fwd.out_proj(y + reverse(y_rev))  # (b, l, d)
        else:
            out, state = fwd(hidden, state)
            out_rev, _ = rev(reverse(hidden))
            out = out + reverse(out_rev)
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
        self.norm_f = RMSNorm(config.d_model, eps=config.norm_eps, backend=config.norm_backend)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.rc_equivariant:  # the reverse strand's logits, permuted to the forward strand's bases
            self.register_buffer("complement", strands.complement_ids(config.vocab_size), persistent=False)
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
            out_projs = [layer.mixer.out_proj]
            if layer.mixer_rev is not None and layer.mixer_rev.out_proj is not layer.mixer.out_proj:
                out_projs.append(layer.mixer_rev.out_proj)  # a tied one is rescaled once
            for out_proj in out_projs:
                nn.init.kaiming_uniform_(out_proj.weight, a=math.sqrt(5))
                out_proj.weight /= math.sqrt(self.config.n_layer)

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
              n_layers: int | None = None, check: bool = True, attention_mask: torch.Tensor | None = None):
        """Run the layers, carrying state. The one place the layers are run.

        input_ids (b, l) [(b,) with `step`], `states` to continue from (None: start of sequence; required with
        `step`, which updates them in place) -> (residual stream after the last block run, before the final norm,
        (b, l, d) [(b, d)], or (b, l, 2d) for rc_equivariant (mambadna/strands.py); the states after the last
        position, None for a non-causal model). `n_layers` runs only the first n blocks (an intermediate layer's
        output; `states` then cover those blocks). `check=False` skips the input checks, which read values back to
        the host: a CUDA graph capture cannot. `attention_mask` (b, l), right-padded, is needed only by the
        non-causal models, whose reverse direction must start at each row's last real base."""
        n_layers = len(self.layers) if n_layers is None else n_layers
        if check:
            if not 1 <= n_layers <= len(self.layers):
                raise ValueError(f"n_layers must be in [1, {len(self.layers)}], got {n_layers}")
            self.check_ids(input_ids, ndim=1 if step else 2)
            if not self.config.causal and (step or states is not None):
                raise ValueError(f"this {self.config.kind} model reads each sequence from both ends, so it has no "
                                 "left-to-right state to continue from: carried states (prefill, truncated BPTT, "
                                 "chunks) and the recurrent step need a causal model")
            if states is not None or step:
                self.check_states(states, input_ids.shape[0], n_layers)
        both = None if self.config.causal else self._strands(input_ids, attention_mask)
        if both is not None:
            input_ids = both.stack(input_ids)  # (b, l), or (2b, l) with the reverse complements
        residual = self.embedding(input_ids)  # (b, l, d) or (b, d)
        if self.config.residual_in_fp32:
            residual = residual.float()
        layers = self.layers[:n_layers]
        if step:
            fused = self._fused(residual)
            for layer, state in zip(layers, states):
                residual = layer.step(residual, state, fused)
            return residual, states
        reverse = both.trunk_reverse if self.config.bidirectional else None
        recompute = self.activation_checkpointing and torch.is_grad_enabled()
        new_states = []
        for layer, state in zip(layers, states or [None] * n_layers):
            if recompute:
                residual, state = checkpoint(layer, residual, state, reverse, use_reentrant=False)
            else:
                residual, state = layer(residual, state, reverse)
            new_states.append(state)
        if both is not None:
            return both.join(residual), None  # (b, l, d) or (b, l, 2d)
        return residual, new_states

    def _strands(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> strands.Strands:
        if attention_mask is None and bool((input_ids == PAD_ID).any()):
            raise ValueError(f"input_ids hold padding (id {PAD_ID}) but no attention_mask was given: a "
                             f"{self.config.kind} model needs the mask to read each row from its last real base")
        mask = check_mask(attention_mask, *input_ids.shape, input_ids.device)
        return strands.Strands(mask, self.config.rc_equivariant, self.config.vocab_size)

    def final_hidden(self, residual: torch.Tensor) -> torch.Tensor:
        """The trunk's residual -> per-position features (b, l, d) after the final norm. For rc_equivariant the
        mean of both strands' features of each base pair: the same vector whichever strand is read."""
        if not self.config.rc_equivariant:
            return self.norm_f(residual)
        forward, rev = residual.chunk(2, dim=-1)  # (b, l, d) each
        return (self.norm_f(forward) + self.norm_f(rev)) / 2

    def logits(self, residual: torch.Tensor) -> torch.Tensor:
        """The trunk's residual -> logits (b, l, V). For rc_equivariant (Caduceus's RCPS LM head) the reverse
        strand's logits are for the complementary base, so they are permuted back before the two are added."""
        if not self.config.rc_equivariant:
            return self.lm_head(self.norm_f(residual))
        forward, rev = residual.chunk(2, dim=-1)  # (b, l, d) each
        return self.lm_head(self.norm_f(forward)) + self.lm_head(self.norm_f(rev))[..., self.complement]

    def hidden_states(self, input_ids: torch.Tensor, states: list[LayerState] | None = None,
                      attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (b, l) -> final-normed hidden states (b, l, d)."""
        return self.final_hidden(self.trunk(input_ids, states, attention_mask=attention_mask)[0])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (b, l) -> logits (b, l, V): of the next base for a causal model, of the base itself (masked
        LM) for a non-causal one."""
        return self.logits(self.trunk(input_ids, attention_mask=attention_mask)[0])  # (b, l, V)

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
        `chunk_bp` the sequence runs in chunks carrying state and only the pooled vectors are built. For
        rc_equivariant each strand is pooled in its own reading order and the two are averaged, so the pooled
        vector of a sequence and of its reverse complement are the same, for every pooling mode."""
        if chunk_bp is not None:
            return None, pooled_chunked(self, input_ids, attention_mask, pooling, chunk_bp)
        residual, _ = self.trunk(input_ids, attention_mask=attention_mask)
        hidden = self.final_hidden(residual)  # (b, l, d)
        if not self.config.rc_equivariant:
            return hidden, pool(hidden, attention_mask, pooling)
        check_pooling(pooling)
        forward, rev = (self.norm_f(x) for x in residual.chunk(2, dim=-1))  # (b, l, d) each, at the same base pair
        pooled = pool(forward, attention_mask, pooling) + pool(rev, attention_mask, strands.MIRRORED_POOLING[pooling])
        return hidden, pooled / 2

    def generate(self, prompt_ids, max_new_tokens: int, temperature: float = 1.0, top_k=None, generator=None):
        if not self.config.causal:
            raise ValueError(f"generation samples one base after another from the left, which needs a causal model; "
                             f"this one is {self.config.kind} (it sees the bases after each position)")
        return inference.generate(self, prompt_ids, max_new_tokens, temperature, top_k, generator)

    def init_kwargs(self) -> dict:
        """Constructor arguments besides the config, saved in config.json."""
        return {}


class MambaClassifier(Pretrained, nn.Module):
    """Sequence classifier: a MambaLM backbone, pooling over real tokens, then one Linear layer. With an
    rc_equivariant backbone the logits of a sequence and of its reverse complement are the same (see `embed`)."""

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
