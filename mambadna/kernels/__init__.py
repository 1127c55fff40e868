"""Selective-scan backends behind one entry point, ``selective_scan``.

Backends: "ref" (sequential definition), "chunked" (exact two-level PyTorch scan, the CPU default) and
"triton" (GPU kernels: v1, scan_triton.py, or v2, scan_v2.py; ``kernel`` pins one, "auto" lets choice.py pick by
shape). Triton is imported lazily so that ``import mambadna`` never fails on machines where Triton or the kernel
module is missing or broken; auto-selection then falls back to "chunked". ``causal_conv`` is the model's causal
conv, which runs F.conv1d or the Triton kernel (conv_triton.py) as ``conv_backend`` says; ``norm_module`` gives the
Triton RMSNorm (norm_triton.py) where the `norm_backend` setting runs it.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING

from mambadna.kernels.choice import CONV_BACKENDS, NORM_BACKENDS, SCAN_KERNELS

if TYPE_CHECKING:
    import torch

__all__ = ["selective_scan", "selective_scan_ref", "selective_scan_chunked", "available_backends", "BACKENDS",
           "SCAN_KERNELS", "step_kernels", "causal_conv", "conv_module", "CONV_BACKENDS", "norm_module",
           "NORM_BACKENDS"]

BACKENDS = ("ref", "chunked", "triton")
# Loaded on first use, with torch: the config names the kernels (choice.py) and the CLI answers without torch.
_LAZY = {"selective_scan_ref": "scan_ref", "selective_scan_chunked": "scan_chunked"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"mambadna.kernels.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
ENV_VAR = "MAMBADNA_SCAN_BACKEND"

_triton_fn = None
_triton_error: str | None = None
_triton_tried = False


def _load_triton():
    """Import the Triton scan once; remember why it failed so the error can be shown when it is asked for."""
    global _triton_fn, _triton_error, _triton_tried
    if not _triton_tried:
        _triton_tried = True
        try:
            from mambadna.kernels.gpu import selective_scan_triton
        except Exception as exc:  # Triton raises more than ImportError when its driver or compiler is unusable
            _triton_error = f"{type(exc).__name__}: {exc}"
        else:
            _triton_fn = selective_scan_triton
    return _triton_fn


# mambadna.kernels.<name> -> the module, or why importing it failed (a string); each tried once
_optional: dict[str, object] = {}


def _load(name: str):
    """(module, None) or (None, why it cannot load) for an optional Triton module of this package."""
    if name not in _optional:
        try:
            _optional[name] = importlib.import_module(f"mambadna.kernels.{name}")
        except Exception as exc:  # as for the scan: Triton raises more than ImportError when unusable
            _optional[name] = f"{type(exc).__name__}: {exc}"
    got = _optional[name]
    return (None, got) if isinstance(got, str) else (got, None)


def step_kernels():
    """The fused one-token step kernels (mambadna/kernels/step_triton.py), or None where Triton cannot load."""
    return _load("step_triton")[0]


def _backend_module(setting: str, name: str, choices: tuple, backend: str, x: torch.Tensor):
    """The Triton module `name` where the setting's value `backend` runs it on x, else None (the PyTorch code):
    "torch" never, "auto" on CUDA tensors when it loads, "triton" always, with a ValueError where it cannot (no
    Triton; CPU tensors outside Triton's interpreter, TRITON_INTERPRET=1)."""
    if backend not in choices:
        raise ValueError(f"unknown {setting} {backend!r}; choose one of {', '.join(choices)}")
    if backend == "torch" or (backend == "auto" and not x.is_cuda):
        return None
    module, error = _load(name)
    if backend == "triton" and module is None:
        raise ValueError(f"{setting} 'triton' is unavailable: {error}; use {setting} torch")
    if backend == "triton" and not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"{setting} 'triton' needs CUDA tensors; x is on {x.device}: use {setting} torch or auto")
    return module


def conv_module(backend: str, x: torch.Tensor):
    """conv_triton.py where the `conv_backend` setting runs it on x, else None (F.conv1d)."""
    return _backend_module("conv_backend", "conv_triton", CONV_BACKENDS, backend, x)


def norm_module(backend: str, x: torch.Tensor):
    """norm_triton.py where the `norm_backend` setting runs it on x, else None (the model's eager RMSNorm)."""
    return _backend_module("norm_backend", "norm_triton", NORM_BACKENDS, backend, x)


def causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv_state=None,
                silu: bool = False, backend: str = "torch"):
    """The model's causal depthwise conv, `MambaMixer.conv`: x (b, d, l), nn.Conv1d's weight (d, 1, K) and bias,
    conv_state (b, d, K) the last K inputs before x, left zero-padded (None: start of sequence) -> (y (b, d, l),
    the state after x, the same layout). `silu` applies SiLU to y; `backend` (the `conv_backend` setting) runs
    F.conv1d or the Triton kernel with bias and SiLU fused (conv_triton.py)."""
    import torch
    import torch.nn.functional as F

    d, _, k = weight.shape
    initial = None if conv_state is None else conv_state[..., 1:].to(x.dtype)  # (b, d, K - 1)
    tail = x[..., -k:] if initial is None else torch.cat([initial, x[..., -k:]], dim=-1)  # the last <= K inputs
    new_state = F.pad(tail, (k - tail.shape[-1], 0))[..., -k:]  # (b, d, K)
    fused = conv_module(backend, x)
    if fused is not None:
        return fused.causal_conv1d(x, weight[:, 0], bias, initial, "silu" if silu else None), new_state
    if initial is None:
        y = F.conv1d(x, weight, bias, padding=k - 1, groups=d)[..., :x.shape[-1]]  # as nn.Conv1d, cut to l
    else:
        y = F.conv1d(torch.cat([initial, x], dim=-1), weight, bias, groups=d)  # (b, d, K - 1 + l) -> (b, d, l)
    return F.silu(y) if silu else y, new_state


def available_backends() -> list[str]:
    """Backends usable in this process: "ref" and "chunked" always, "triton" when it imports and CUDA is present."""
    import torch

    names = ["ref", "chunked"]
    if torch.cuda.is_available() and _load_triton() is not None:
        names.append("triton")
    return names


def _shape(x) -> str:
    return "None" if x is None else str(tuple(x.shape))


def _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state) -> None:
    """Raise ValueError naming the first argument whose shape breaks the contract in docs/ARCHITECTURE.md."""
    if u.dim() != 3:
        raise ValueError(f"u must be (b, d, l); got {_shape(u)}")
    b, d, l = u.shape
    if l < 1:
        raise ValueError(f"u must have sequence length l >= 1; got {_shape(u)}")
    if delta.shape != u.shape:
        raise ValueError(f"delta must be (b, d, l) = {tuple(u.shape)} like u; got {_shape(delta)}")
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must be (d, n) with d = {d}; got {_shape(A)}")
    n = A.shape[1]
    for name, M in (("B", B), ("C", C)):
        ok = (M.dim() == 3 and tuple(M.shape) == (b, n, l)) or (
            M.dim() == 4 and M.shape[0] == b and M.shape[2:] == (n, l) and M.shape[1] >= 1 and d % M.shape[1] == 0
        )
        if not ok:
            raise ValueError(
                f"{name} must be (b, n, l) or (b, g, n, l) with d divisible by g; "
                f"got {_shape(M)} for b={b}, d={d}, n={n}, l={l}"
            )
    if B.dim() == 4 and C.dim() == 4 and B.shape[1] != C.shape[1]:
        raise ValueError(f"grouped B and C must have the same number of groups g; got B {_shape(B)}, C {_shape(C)}")
    for name, v in (("D", D), ("delta_bias", delta_bias)):
        if v is not None and tuple(v.shape) != (d,):
            raise ValueError(f"{name} must be (d,) = ({d},); got {_shape(v)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must be (b, d, l) = {tuple(u.shape)} like u; got {_shape(z)}")
    if initial_state is not None and tuple(initial_state.shape) != (b, d, n):
        raise ValueError(f"initial_state must be (b, d, n) = ({b}, {d}, {n}); got {_shape(initial_state)}")
    for name, x in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
                    ("delta_bias", delta_bias), ("initial_state", initial_state)):
        if x is not None and not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor; got {x.dtype}")
        if x is not None and x.device != u.device:
            raise ValueError(f"{name} is on {x.device} but u is on {u.device}; all inputs must share one device")


def _resolve_backend(backend: str | None, u: torch.Tensor) -> str:
    source = "backend argument"
    if backend is None:
        backend = os.environ.get(ENV_VAR) or None
        source = f"environment variable {ENV_VAR}"
    if backend is None:
        return "triton" if u.is_cuda and _load_triton() is not None else "chunked"
    if backend not in BACKENDS:
        raise ValueError(f"unknown scan backend {backend!r} from the {source}; choose one of {', '.join(BACKENDS)}")
    if backend == "triton":
        if not u.is_cuda:
            raise ValueError(f"scan backend 'triton' (from the {source}) needs CUDA tensors; u is on {u.device}")
        if _load_triton() is None:
            raise ValueError(f"scan backend 'triton' (from the {source}) is unavailable: {_triton_error}")
    return backend


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    backend: str | None = None,
    kernel: str = "auto",
):
    """Selective scan with the semantics of docs/ARCHITECTURE.md; ``backend`` picks the implementation
    (None: "triton" for CUDA tensors when it imports, else "chunked"; MAMBADNA_SCAN_BACKEND overrides auto) and
    ``kernel`` the Triton kernel ("auto", "v1", "v2"; the other backends have one implementation and ignore it)."""
    if kernel not in SCAN_KERNELS:
        raise ValueError(f"unknown scan kernel {kernel!r}; choose one of {', '.join(SCAN_KERNELS)}")
    _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    name = _resolve_backend(backend, u)
    kwargs = dict(D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus, initial_state=initial_state,
                  return_final_state=return_final_state)
    if name == "triton":
        return _load_triton()(u, delta, A, B, C, **kwargs, version=kernel)
    fn = getattr(sys.modules[__name__], {"ref": "selective_scan_ref", "chunked": "selective_scan_chunked"}[name])
    return fn(u, delta, A, B, C, **kwargs)
