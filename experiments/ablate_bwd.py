"""Ablation of the backward chunk kernel (GPU only): which part of `_bwd_chunk_scan` costs the time.

    python experiments/ablate_bwd.py

Writes variants of the kernel's source with one part removed or replaced (timing only: their results are wrong)
to a temporary module, and times each at (1, 512, 2^20, 16) bf16 with the production launch shape.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import tempfile

import torch
from triton.testing import do_bench

from mambadna.kernels import scan_triton

SRC = inspect.getsource(scan_triton)
BODY = SRC[SRC.index("@triton.jit\ndef _bwd_chunk_scan("): SRC.index("def _alloc(")]
ATOMIC_DB = "        tl.atomic_add(p_dB + i_n * s_dn, tl.sum(b_g * b_du, axis=0), mask=m_t)\n"
ATOMIC_DC = "        tl.atomic_add(p_dC + i_n * s_dn, tl.sum(b_dyp * b_h, axis=0), mask=m_t)\n"
VARIANTS = {
    "production": BODY,
    "dB/dC: no reduction, no atomics": BODY.replace(ATOMIC_DB, "").replace(ATOMIC_DC, ""),
    "dB/dC: reduction, no atomics": BODY.replace(ATOMIC_DB, "        b_y += tl.sum(b_g * b_du, axis=0)[None, :]\n")
    .replace(ATOMIC_DC, "        b_y += tl.sum(b_dyp * b_h, axis=0)[None, :]\n"),
    "reverse scan as a forward scan": BODY.replace("reverse=True,", "reverse=False,"),
    "no dA reduction": BODY.replace("        tl.store(p_dA + i_n * D_, tl.sum(b_gdh * b_dt, axis=1))\n", ""),
    "no reverse scan at all": BODY.replace(
        "        b_alc, b_g = tl.associative_scan(\n            (tl.exp2(b_dt_next * b_A2[:, None]), b_dyp * b_C[None, :]), "
        "axis=1, combine_fn=_linear_combine,\n            reverse=True,\n        )\n",
        "        b_alc = tl.exp2(b_dt_next * b_A2[:, None])\n        b_g = b_dyp * b_C[None, :]\n"),
}


def load_variant(i, body):
    head = SRC[: SRC.index("@triton.jit\ndef _fwd_chunk_summary(")]
    helpers = SRC[SRC.index("@triton.jit\ndef _load_dy_gated("): SRC.index("@triton.jit\ndef _bwd_chunk_summary(")]
    f = tempfile.NamedTemporaryFile("w", suffix=f"_abl{i}.py", delete=False)
    f.write(head + helpers + body)
    f.close()
    spec = importlib.util.spec_from_file_location(f"abl{i}", f.name)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod._bwd_chunk_scan


def main():
    b, d, l, n = 1, 512, 2**20, 16
    T, BD, W = 32, 32, 2
    nc = l // T
    bf = torch.bfloat16
    u, delta, z, dy = (torch.randn(b, d, l, device="cuda").to(bf) for _ in range(4))
    B, C = (torch.randn(b, 1, n, l, device="cuda").to(bf) for _ in range(2))
    A2 = -torch.rand(n, d, device="cuda") - 0.5
    D, bias = torch.randn(d, device="cuda"), torch.randn(d, device="cuda")
    H, G = (torch.randn(b, nc + 1, n, d, device="cuda") * 0.1 for _ in range(2))
    du, ddelta, dz = (torch.empty_like(u) for _ in range(3))
    dB, dC = torch.zeros(b, 1, n, l, device="cuda"), torch.zeros(b, 1, n, l, device="cuda")
    dA_part = torch.empty(b, nc, n, d, device="cuda")
    dD_part, dbias_part = torch.empty(b, nc, d, device="cuda"), torch.empty(b, nc, d, device="cuda")
    for i, (name, body) in enumerate(VARIANTS.items()):
        kern = load_variant(i, body)

        def launch():
            kern[(nc, d // BD, b)](
                u, delta, bias, A2, B, C, D, z, H, G, dy, du, ddelta, dz, dB, dC, dA_part, dD_part, dbias_part,
                l, nc, n, d, u.stride(0), u.stride(1), B.stride(0), B.stride(1), B.stride(2),
                C.stride(0), C.stride(1), C.stride(2), dB.stride(0), dB.stride(1), dB.stride(2),
                HAS_BIAS=True, SOFTPLUS=True, HAS_D=True, HAS_Z=True, BLOCK_D=BD, T=T, num_warps=W,
            )

        try:
            ms = do_bench(launch, warmup=10, rep=200, return_mode="median")
            k = launch()
            print(f"{name:<40} {ms:8.2f} ms  regs {getattr(k, 'n_regs', '?')} spills {getattr(k, 'n_spills', '?')}",
                  flush=True)
        except Exception as exc:
            print(f"{name:<40} failed: {str(exc)[:300]}", flush=True)


if __name__ == "__main__":
    main()
