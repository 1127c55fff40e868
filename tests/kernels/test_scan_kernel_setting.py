"""Which Triton scan kernel runs: the rule "auto" follows (kernels/choice.py, from a committed same-run measurement),
and the model setting `scan_kernel` reaching the kernel with the model's own input layouts.

The model tests run the kernels in Triton's CPU interpreter (`selective_scan` itself refuses CPU tensors for the
triton backend, so the model's call is routed to the kernel directly), at tiny shapes with launch shapes shrunk so
that chunk, tile and checkpoint boundaries fall inside the sequence.
"""

from __future__ import annotations

import pytest
import torch

from mambadna import kernels
from mambadna.config import MambaConfig
from mambadna.kernels import choice

MODEL_SHAPES = [(1, 512, 2**16), (1, 512, 2**18), (1, 512, 2**20), (1, 256, 2**14), (8, 1024, 4096)]


def test_auto_runs_v2_wherever_it_fits_at_the_measured_and_the_models_shapes():
    """v2 won or tied at all four shapes of the 2026-12-06 H100 run, so "auto" picks it wherever it fits."""
    for b, d, l, n in choice.MEASURED:
        assert choice.auto_version(b, d, l, n) == 2
    for b, d, l in MODEL_SHAPES:
        assert choice.auto_version(b, d, l, 16) == 2
    assert choice.auto_version(1, 512, 2**20, 32) == 1  # more states than v2 keeps in registers
    assert choice.auto_version(1, 48, 2**20, 16) == 1  # 48 channels: no whole warps
    assert choice.auto_version(1, 512, 2**20, 16, groups=32) == 1  # 16 channels a group


def test_auto_follows_the_table(monkeypatch):
    """The table decides: where v1 measured faster, the nearest shapes run v1; a near tie (within TIE) goes to v2."""
    table = dict(choice.MEASURED)
    table[(8, 512, 2**17, 16)] = (50.0, 65.5)  # suppose v1 had won at batch 8 x 2^17
    monkeypatch.setattr(choice, "MEASURED", table)
    assert choice.nearest_measured(8, 512, 2**17) == (8, 512, 2**17, 16)
    assert choice.auto_version(8, 512, 2**17, 16) == 1
    assert choice.auto_version(4, 512, 2**18, 16) == 1  # nearest to batch 8 x 2^17
    assert choice.auto_version(1, 512, 2**20, 16) == 2
    assert choice.auto_version(32, 2048, 2048, 16) == 2
    table[(8, 512, 2**17, 16)] = (65.5, 65.5 * (1 + choice.TIE / 2))
    assert choice.auto_version(8, 512, 2**17, 16) == 2


def test_setting_is_validated_and_kernel_names_checked():
    assert MambaConfig(d_model=32, n_layer=1).scan_kernel == "auto"
    with pytest.raises(ValueError, match="scan_kernel must be one of"):
        MambaConfig(d_model=32, n_layer=1, scan_kernel="v3")
    with pytest.raises(ValueError, match="at most 16 states .* d_state is 32: use scan_kernel v1 or auto"):
        MambaConfig(d_model=32, n_layer=1, d_state=32, scan_kernel="v2")
    x = torch.randn(1, 4, 5)
    with pytest.raises(ValueError, match="unknown scan kernel 'fast'"):
        kernels.selective_scan(x, x, -torch.ones(4, 2), torch.randn(1, 2, 5), torch.randn(1, 2, 5), kernel="fast")


def _model_with_triton_on_cpu(monkeypatch, scan_kernel: str, seen: list):
    """A tiny MambaLM whose scan runs the Triton kernel `scan_kernel` asks for, in the interpreter; `seen` records
    (kernel, version run, u, delta, z strides) per call."""
    pytest.importorskip("triton")
    from mambadna import model as model_module
    from mambadna.kernels import gpu

    small = {1: dict(chunk_size=16), 2: dict(tile=8, ckpt_tiles=2, chunk=16)}

    def scan(u, delta, A, B, C, D=None, z=None, backend=None, kernel="auto", **kwargs):
        if backend != "triton":
            return kernels.selective_scan(u, delta, A, B, C, D, z, backend=backend, kernel=kernel, **kwargs)
        version = gpu.VERSIONS[kernel] or gpu.pick_version(u, A, B, C)
        seen.append((kernel, version, u.stride(), delta.stride(), z.stride()))
        return gpu.selective_scan_triton(u, delta, A, B, C, D, z, **kwargs, version=version, **small[version])

    monkeypatch.setattr(model_module, "selective_scan", scan)
    torch.manual_seed(0)
    return model_module.MambaLM(MambaConfig(d_model=16, n_layer=1, d_state=2, scan_backend="triton",
                                            scan_kernel=scan_kernel))


def _loss_and_grads(model, ids):
    logits = model(ids)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    return logits.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("scan_kernel, version", [("v1", 1), ("v2", 2), ("auto", 2)])
def test_model_runs_the_pinned_kernel_on_its_own_layouts(monkeypatch, scan_kernel, version):
    """The setting reaches the kernel; the model hands the scan (b, d, l) views of its (b, l, ·) projections (Δ and
    z with channels contiguous), which both kernels take, with the reference scan's logits and gradients."""
    seen = []
    model = _model_with_triton_on_cpu(monkeypatch, scan_kernel, seen)
    ids = torch.randint(5, 9, (2, 21))
    got_logits, got_grads = _loss_and_grads(model, ids)
    assert {s[:2] for s in seen} == {(scan_kernel, version)} and len(seen) == 1
    assert all(s[3][1] == 1 and s[4][1] == 1 for s in seen), "delta and z are channels-last views in the model"
    reference = type(model)(MambaConfig(**{**model.config.to_dict(), "scan_backend": "ref"}))
    reference.load_state_dict(model.state_dict())
    want_logits, want_grads = _loss_and_grads(reference, ids)
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-4, atol=1e-5)
    for got, want in zip(got_grads, want_grads):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)
