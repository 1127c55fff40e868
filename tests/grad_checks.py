"""Gradient comparison shared by the model-level tests (the kernels' own table is kernels/scan_cases.py)."""


def assert_grads_close(got, want, rtol=1e-4):
    """Every gradient in `got` within rtol of its twin in `want`, relative to the largest entry of the latter."""
    for g, w in zip(got, want):
        scale = w.abs().max().clamp_min(1e-12)
        assert (g - w).abs().max() / scale < rtol
