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
residual: h = h + Mixer(RMSNorm(h)). Recurrent (one token at a time) inference lives in mambadna/inference.py;
save/load in mambadna/checkpoint.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mambadna import checkpoint, inference
from mambadna.config import MambaConfig
from mambadna.kernels import selective_scan

POOLINGS = ("mean", "last", "cls")


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
    """One selective-SSM mixer. `forward` can carry conv and SSM state across chunks of a long sequence:
    running chunks one after another with the returned states equals running the whole sequence at once."""

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

    def forward(
        self,
        hidden: torch.Tensor,
        conv_state: torch.Tensor | None = None,
        ssm_state: torch.Tensor | None = None,
        return_state: bool = False,
    ):
        """hidden (b, l, d) -> (b, l, d). With `return_state`, also returns (conv_state (b, d_inner, d_conv),
        ssm_state (b, d_inner, n) fp32) to continue from; `conv_state`/`ssm_state` continue a previous chunk."""
        xz = self.in_proj(hidden)  # (b, l, 2*d_inner)
        x, z = xz.transpose(1, 2).chunk(2, dim=1)  # (b, d_inner, l) each
        x_conv, new_conv_state = self.conv(x, conv_state)
        x_conv = F.silu(x_conv)
        y, new_ssm_state = self.ssm(x_conv, z, ssm_state, return_final_state=return_state)
        out = self.out_proj(y.transpose(1, 2))  # (b, l, d)
        return (out, new_conv_state, new_ssm_state) if return_state else out

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

    def ssm(self, x: torch.Tensor, z: torch.Tensor, initial_state=None, return_final_state: bool = False):
        """Selective scan over x (b, d_inner, l) gated by z -> (y (b, d_inner, l), final state or None)."""
        delta, B, C = self.ssm_params(x)
        A = -torch.exp(self.A_log.float())  # (d_inner, n)
        result = selective_scan(
            x, delta, A, B, C, self.D.float(), z=z,
            delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
            initial_state=initial_state, return_final_state=return_final_state, backend=self.config.scan_backend,
        )
        return result if return_final_state else (result, None)


class MambaBlock(nn.Module):
    """Pre-norm residual block: residual <- residual + Mixer(RMSNorm(residual))."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.norm = RMSNorm(config.d_model, eps=config.norm_eps)
        self.mixer = MambaMixer(config)

    def forward(self, residual: torch.Tensor, conv_state=None, ssm_state=None, return_state: bool = False):
        out = self.mixer(self.norm(residual), conv_state, ssm_state, return_state)
        if return_state:
            out, conv_state, ssm_state = out
            return residual + out.to(residual.dtype), conv_state, ssm_state
        return residual + out.to(residual.dtype)


class MambaLM(nn.Module):
    """Embedding -> n_layer MambaBlocks -> RMSNorm -> LM head (tied to the embedding by default)."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        if not isinstance(config, MambaConfig):
            raise ValueError(f"MambaLM needs a MambaConfig, got {type(config).__name__}")
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(MambaBlock(config) for _ in range(config.n_layer))
        self.norm_f = RMSNorm(config.d_model, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
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

    def _check_ids(self, input_ids: torch.Tensor, ndim: int = 2) -> None:
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

    def residual_stream(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (b, l) -> the residual stream after the last block, before the final norm (b, l, d)."""
        self._check_ids(input_ids)
        residual = self.embedding(input_ids)  # (b, l, d)
        if self.config.residual_in_fp32:
            residual = residual.float()
        for layer in self.layers:
            residual = layer(residual)
        return residual

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (b, l) -> final-normed hidden states (b, l, d)."""
        return self.norm_f(self.residual_stream(input_ids))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (b, l) -> next-token logits (b, l, V)."""
        return self.lm_head(self.hidden_states(input_ids))  # (b, l, V)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, pooling: str = "mean"):
        """-> (per_position (b, l, d), pooled (b, d)). See `pool` for the pooling modes."""
        hidden = self.hidden_states(input_ids)
        return hidden, pool(hidden, attention_mask, pooling)

    # Recurrent inference and checkpoints are implemented in their own modules; these are the model API.
    def allocate_cache(self, batch_size: int, device=None, dtype=None) -> inference.InferenceCache:
        return inference.allocate_cache(self, batch_size, device=device, dtype=dtype)

    def step(self, token_ids: torch.Tensor, cache: inference.InferenceCache) -> torch.Tensor:
        return inference.step(self, token_ids, cache)

    def generate(self, prompt_ids, max_new_tokens: int, temperature: float = 1.0, top_k=None, generator=None):
        return inference.generate(self, prompt_ids, max_new_tokens, temperature, top_k, generator)

    def init_kwargs(self) -> dict:
        """Constructor arguments besides the config, saved in config.json."""
        return {}

    def save_pretrained(self, directory) -> None:
        checkpoint.save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory, config: MambaConfig | None = None, map_location="cpu") -> "MambaLM":
        return checkpoint.load_pretrained(cls, directory, config=config, map_location=map_location)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """hidden (b, l, d) -> (b, d).

    "mean": average over real tokens; "last": the last real token (with a causal model the only position that has
    seen the whole sequence); "cls": position 0 (it has seen only the first token in a causal model, so it carries
    little beyond BOS: prefer "last"). Batches must be right-padded: in a causal model left padding would change
    the states of every real token.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    b, l, _ = hidden.shape
    if attention_mask is None:
        mask = torch.ones(b, l, dtype=torch.bool, device=hidden.device)
    else:
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
    if pooling == "cls":
        return hidden[:, 0]  # (b, d)
    if pooling == "last":
        last = mask.sum(-1) - 1  # (b,)
        return hidden[torch.arange(b, device=hidden.device), last]  # (b, d)
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # (b, l, 1)
    return (hidden * weights).sum(1) / weights.sum(1)  # (b, d)


class MambaClassifier(nn.Module):
    """Sequence classifier: a MambaLM backbone, pooling over real tokens, then one Linear layer."""

    def __init__(self, config: MambaConfig, num_classes: int, pooling: str = "last"):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.config, self.num_classes, self.pooling = config, num_classes, pooling
        self.backbone = MambaLM(config)
        if not config.tie_embeddings:
            # The LM head is unused here; freezing it keeps DDP from complaining about parameters without grads.
            self.backbone.lm_head.weight.requires_grad_(False)
        self.head = nn.Linear(config.d_model, num_classes)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (b, l), attention_mask (b, l) bool, right-padded -> logits (b, num_classes)."""
        _, pooled = self.backbone.embed(input_ids, attention_mask, self.pooling)  # (b, d)
        return self.head(pooled)  # (b, num_classes)

    def init_kwargs(self) -> dict:
        return {"num_classes": self.num_classes, "pooling": self.pooling}

    def save_pretrained(self, directory) -> None:
        checkpoint.save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory, config: MambaConfig | None = None, map_location="cpu") -> "MambaClassifier":
        return checkpoint.load_pretrained(cls, directory, config=config, map_location=map_location)

    @classmethod
    def from_pretrained_backbone(cls, directory, num_classes: int, pooling: str = "last", map_location="cpu"):
        """A new classifier (fresh head) whose backbone holds the weights of a saved MambaLM directory."""
        backbone = MambaLM.from_pretrained(directory, map_location=map_location)
        model = cls(backbone.config, num_classes, pooling)
        model.backbone.load_state_dict(backbone.state_dict())
        return model.to(map_location)
