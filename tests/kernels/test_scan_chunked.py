"""The chunked selective scan against the sequential definition: outputs, final state and every gradient."""

from __future__ import annotations

import pytest
import torch
from scan_cases import NAMES, assert_scan_close, make_inputs, run_scan

from mambadna.kernels import selective_scan_chunked, selective_scan_ref
from mambadna.kernels.scan_chunked import default_chunk_size


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("groups", [None, 2])
@pytest.mark.parametrize("l", [1, 63, 1000])
def test_chunked_matches_ref_with_every_option(l, groups, dtype):
    x = make_inputs(l=l, g=groups, dtype=dtype)
    assert_scan_close(run_scan(selective_scan_chunked, x), run_scan(selective_scan_ref, x), "between")


def test_chunked_matches_ref_long_sequence():
    """l = 4097 is one past a multiple of the default chunk (64): the last chunk is almost all padding."""
    x = make_inputs(b=1, d=2, l=4097, n=4, g=2)
    assert default_chunk_size(4097) == 64
    assert_scan_close(run_scan(selective_scan_chunked, x), run_scan(selective_scan_ref, x), "between")


@pytest.mark.parametrize("optional", [(), ("D",), ("z",), ("delta_bias",), ("initial_state",), NAMES[5:]])
def test_chunked_matches_ref_without_optional_inputs(optional):
    x = make_inputs(l=40)
    x.update({k: None for k in optional})
    assert_scan_close(run_scan(selective_scan_chunked, x), run_scan(selective_scan_ref, x), "between")


@pytest.mark.parametrize("chunk_size", [1, 2, 7, 40, 41, 100])
def test_chunk_size_does_not_change_the_result(chunk_size):
    """Chunks of 1, chunks that do and don't divide l, a single chunk, and a chunk longer than l."""
    x = make_inputs(l=40, g=4)
    want = run_scan(selective_scan_ref, x)
    assert_scan_close(run_scan(selective_scan_chunked, x, chunk_size=chunk_size), want, "between")


def test_channel_blocks_do_not_change_the_result(monkeypatch):
    """Force blocks of one channel (and a ragged last block) so the block loop itself is exercised."""
    import mambadna.kernels.scan_chunked as scan_chunked

    x = make_inputs(d=6, l=50, g=2)
    want = run_scan(selective_scan_ref, x)
    monkeypatch.setattr(scan_chunked, "BLOCK_ELEMENTS", 2 * 50 * 3 * 2)  # 2 of the 3 channels of a group
    assert_scan_close(run_scan(selective_scan_chunked, x, chunk_size=8), want, "between")


def test_stable_for_large_delta_and_very_negative_A():
    """Δ up to ~10 and A down to -64: decays exp(Δ A) underflow to 0; nothing may overflow or turn NaN."""
    x = make_inputs(l=300, delta_scale=4.0)
    x["delta"] = x["delta"].clamp(max=10.0)
    x["A"] = -torch.linspace(1e-3, 64.0, x["A"].numel()).view_as(x["A"])
    got = run_scan(selective_scan_chunked, x)
    for key, value in got.items():
        assert torch.isfinite(value).all(), key
    assert_scan_close(got, run_scan(selective_scan_ref, x), "between")


def test_returns_only_y_without_final_state_and_backprops():
    x = make_inputs(l=20)
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    y = selective_scan_chunked(**leaves, delta_softplus=True)
    assert isinstance(y, torch.Tensor) and y.shape == x["u"].shape
    y.sum().backward()
    assert all(v.grad is not None for v in leaves.values())


def test_bf16_inputs_give_bf16_output_and_gradients():
    x = make_inputs(l=30, dtype=torch.bfloat16)
    got = run_scan(selective_scan_chunked, x)
    assert got["y"].dtype == torch.bfloat16 and got["h_last"].dtype == torch.float32
    assert got["du"].dtype == got["ddelta"].dtype == got["dz"].dtype == torch.bfloat16
    assert got["dA"].dtype == got["dB"].dtype == got["dinitial_state"].dtype == torch.float32


def test_autocast_does_not_lower_precision():
    """Under CPU autocast to bf16 the scan still computes in fp32 (its einsum/matmul would otherwise drop)."""
    x = make_inputs(l=50)
    want = run_scan(selective_scan_chunked, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run_scan(selective_scan_chunked, x)
    assert_scan_close(got, want, "between")


@pytest.mark.parametrize("groups", [None, 2])
def test_gradcheck_float64(groups):
    """Finite differences in float64 at a tiny shape with 3 chunks (the last one padded) and every input."""
    x = make_inputs(b=2, d=2, l=5, n=2, g=groups, dtype=torch.float64)
    args = [x[k].double().requires_grad_() for k in NAMES]

    def scan(*inputs):
        return selective_scan_chunked(
            **dict(zip(NAMES, inputs)), delta_softplus=True, return_final_state=True, chunk_size=2
        )

    assert torch.autograd.gradcheck(scan, args, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_bad_chunk_size_raises():
    x = make_inputs(l=10)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        selective_scan_chunked(x["u"], x["delta"], x["A"], x["B"], x["C"], chunk_size=0)
