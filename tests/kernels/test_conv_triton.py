"""The Triton causal depthwise conv (kernels/conv_triton.py) against its PyTorch definition, and the model setting
`conv_backend` that runs it.

In Triton's interpreter on a CPU-only machine (root conftest.py). Tiles are shrunk (16 positions, 4 channels, 6
channels in all) so that position and channel blocks end inside the inputs, and the backward's grid is capped so
that its programs loop over several steps; outputs are NaN-poisoned, so an unwritten element fails. The
interpreter does not check coalescing or speed: those need a GPU (experiments/bench_model.py --conv-backends).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scan_cases import TOLERANCE, rel_err

pytest.importorskip("triton")

from mambadna import kernels  # noqa: E402
from mambadna.config import MambaConfig  # noqa: E402
from mambadna.kernels import buffers  # noqa: E402
from mambadna.kernels.conv_triton import causal_conv1d, causal_conv1d_ref  # noqa: E402
from mambadna.model import MambaLM  # noqa: E402
from mambadna.objective import lm_loss  # noqa: E402
from mambadna.tbptt import tbptt_step  # noqa: E402

# blocks end inside the inputs; at l = 130 the backward's programs loop over several steps each
SMALL = dict(block_l=16, block_d=4, max_programs=8)
NAMES = ("x", "weight", "bias", "initial")


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    monkeypatch.setattr(buffers, "POISON_OUTPUTS", True)


def make(b=2, d=6, l=37, k=4, dtype=torch.float32, layout="model", bias=True, initial=True, seed=0):
    """x channels-last as the model hands it ("model": the first d channels of a (b, l, 2d) tensor viewed as
    (b, d, l), a fused in_proj's x half; the model's own (b, l, d) half is the same kind of view) or (b, d, l)
    contiguous ("bdl"); weight and bias fp32 like the model's parameters; initial in x's dtype."""
    gen = torch.Generator().manual_seed(seed)
    if layout == "model":
        x = torch.randn(b, l, 2 * d, generator=gen).to(dtype).transpose(1, 2)[:, :d]
    else:
        x = torch.randn(b, d, l, generator=gen).to(dtype)
    return dict(x=x, weight=torch.randn(d, k, generator=gen) / k**0.5,
                bias=torch.randn(d, generator=gen) if bias else None,
                initial=torch.randn(b, d, k - 1, generator=gen).to(dtype) if initial else None)


def make_dy(x, layout="model"):
    """A fixed random output gradient in x's dtype: a (b, d, l) view of (b, l, d) storage, or contiguous."""
    b, d, l = x.shape
    gen = torch.Generator().manual_seed(1)
    if layout == "model":
        return torch.randn(b, l, d, generator=gen).to(x.dtype).transpose(1, 2)
    return torch.randn(b, d, l, generator=gen).to(x.dtype)


def run(fn, inputs, activation, dy, **launch):
    """y and the gradient of every input, backpropagating dy (cast to y's dtype: the float64 reference gets the
    same, already rounded, values)."""
    leaves = {k: v.detach().clone().requires_grad_() if v is not None else None for k, v in inputs.items()}
    y = fn(**leaves, activation=activation, **launch)
    y.backward(dy.to(y.dtype))
    return {"y": y.detach(), **{"d" + k: v.grad for k, v in leaves.items() if v is not None}}


def as_float64(inputs):
    return {k: v.detach().double() if v is not None else None for k, v in inputs.items()}


def assert_close_to_float64(got, want):
    """Each tensor finite and within TOLERANCE["vs_float64"] of the float64 definition, for its own dtype."""
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        assert torch.isfinite(g.float()).all(), f"{key} has NaN/inf: an unwritten or broken element"
        err = rel_err(g, w)
        assert err < TOLERANCE["vs_float64"][g.dtype], f"{key}: relative error {err:.2e}"


# every option appears on and off: (bias, initial, activation)
OPTIONS = [(True, True, "silu"), (False, False, None), (True, False, None), (False, True, "silu")]


@pytest.mark.parametrize("bias, initial, activation", OPTIONS)
@pytest.mark.parametrize("layout", ["model", "bdl"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("l", [1, 3, 37, 130])
def test_output_and_every_gradient_equal_the_definition(l, dtype, layout, bias, initial, activation):
    x = make(l=l, dtype=dtype, layout=layout, bias=bias, initial=initial)
    dy = make_dy(x["x"], layout)
    got = run(causal_conv1d, x, activation, dy, **SMALL)
    assert_close_to_float64(got, run(causal_conv1d_ref, as_float64(x), activation, dy))
    for name in NAMES:
        if x[name] is not None:
            assert got["d" + name].shape == x[name].shape and got["d" + name].dtype == x[name].dtype
    assert got["y"].dtype == dtype and got["y"].stride(1) == 1, "y is a (b, d, l) view of (b, l, d) storage"


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_other_widths_and_short_backward_steps(k):
    """d_conv 4 is the model's default; the kernels take any width (K = 1 has nothing before position 0). Steps of
    8 positions advance by 8 - (K-1), so at K >= 4 the positions that read `initial` take two steps."""
    x = make(l=21, k=k)
    got = run(causal_conv1d, x, "silu", make_dy(x["x"]), **dict(SMALL, block_l=8))
    assert_close_to_float64(got, run(causal_conv1d_ref, as_float64(x), "silu", make_dy(x["x"])))


@pytest.mark.parametrize("k", [2, 4, 5])
@pytest.mark.parametrize("bias, initial, activation", OPTIONS[:2])
def test_dweight_summed_per_row_equals_the_definition(k, bias, initial, activation):
    """dw_rows: the backward's dweight products kept per row and summed once a program (K <= 4; K = 5 falls back to
    the per-step sums), over several steps a program (max_programs 1) and the launch that reads `initial`."""
    x = make(l=37, k=k, bias=bias, initial=initial)
    dy = make_dy(x["x"])
    got = run(causal_conv1d, x, activation, dy, **dict(SMALL, block_l=8, max_programs=1, dw_rows=True))
    assert_close_to_float64(got, run(causal_conv1d_ref, as_float64(x), activation, dy))


def test_default_launch_and_a_broadcast_gradient():
    """The default tile sizes (one block covering everything here), and dy with zero strides (from y.sum())."""
    x = make(l=45)
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    causal_conv1d(**leaves, activation="silu").sum().backward()
    want = {k: v.clone().requires_grad_() for k, v in as_float64(x).items()}
    causal_conv1d_ref(**want, activation="silu").sum().backward()
    for name in NAMES:
        assert rel_err(leaves[name].grad, want[name].grad) < TOLERANCE["vs_float64"][torch.float32], name


def test_backward_is_deterministic():
    x = make(l=37, seed=2)
    first, second = (run(causal_conv1d, x, "silu", make_dy(x["x"]), **SMALL) for _ in range(2))
    for key in first:
        assert torch.equal(first[key], second[key]), key


@pytest.mark.parametrize("change, match", [
    (dict(x=torch.randn(2, 6)), r"x must be \(b, d, l\)"),
    (dict(x=torch.randn(2, 6, 0)), "length l >= 1"),
    (dict(weight=torch.randn(5, 4)), r"weight must be \(d, K\) with d = 6"),
    (dict(bias=torch.randn(5)), r"bias must be \(6,\)"),
    (dict(initial=torch.randn(2, 6, 4)), r"initial must be \(b, d, K-1\) = \(2, 6, 3\)"),
])
def test_bad_inputs_are_named(change, match):
    with pytest.raises(ValueError, match=match):
        causal_conv1d(**{**make(), **change})
    with pytest.raises(ValueError, match="activation must be one of"):
        causal_conv1d(**make(), activation="gelu")


# ---- the model setting ----

def test_setting_is_validated_and_auto_runs_torch_on_the_cpu():
    assert MambaConfig(d_model=16, n_layer=1).conv_backend == "auto"
    with pytest.raises(ValueError, match="conv_backend must be one of"):
        MambaConfig(d_model=16, n_layer=1, conv_backend="cuda")
    x = torch.randn(1, 4, 5)
    assert kernels.conv_module("auto", x) is None and kernels.conv_module("torch", x) is None
    assert kernels.conv_module("triton", x).causal_conv1d is causal_conv1d
    with pytest.raises(ValueError, match="unknown conv_backend 'fast'"):
        kernels.conv_module("fast", x)


def _pair(**overrides):
    """Two copies of one small model (the same weights), running the torch and the Triton conv."""
    torch.manual_seed(0)
    cfg = dict(d_model=16, n_layer=2, d_state=4, **overrides)
    torch_model = MambaLM(MambaConfig(**cfg, conv_backend="torch"))
    triton_model = MambaLM(MambaConfig(**cfg, conv_backend="triton"))
    triton_model.load_state_dict(torch_model.state_dict())
    return torch_model, triton_model


def _loss_and_grads(model, ids, chunk_bp=None):
    """Summed next-token loss over ids (b, l) (chunk by chunk, carrying state, with `chunk_bp`) and every gradient."""
    loss, _, _ = lm_loss(model, ids[:, :-1], ids[:, 1:], chunk_bp)
    return loss.detach(), torch.autograd.grad(loss, list(model.parameters()))


def _assert_grads_between(got, want):
    rtol, atol = TOLERANCE["between"][torch.float32]
    for g, w in zip(got, want):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol * w.abs().max().item())


@pytest.mark.parametrize("chunk_bp", [None, 3, 16])
def test_model_with_the_triton_conv_equals_the_torch_conv(monkeypatch, chunk_bp):
    """Loss and every parameter gradient, whole (None) and in chunks carrying the conv state (3: shorter than
    d_conv, so a state spans several chunks), against the torch conv run whole; the Triton conv really runs."""
    calls = []
    original = causal_conv1d
    from mambadna.kernels import conv_triton

    monkeypatch.setattr(conv_triton, "causal_conv1d",
                        lambda x, *args, **kw: calls.append(x.stride()) or original(x, *args, **kw))
    torch_model, triton_model = _pair(conv_bias=chunk_bp != 16)
    ids = torch.randint(5, 10, (2, 38), generator=torch.Generator().manual_seed(1))
    want_loss, want_grads = _loss_and_grads(torch_model, ids)
    got_loss, got_grads = _loss_and_grads(triton_model, ids, chunk_bp)
    assert calls and all(s[1] == 1 for s in calls), "the model hands the kernel channels-last views"
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-5)
    _assert_grads_between(got_grads, want_grads)


@pytest.mark.parametrize("chunk_bp", [None, 6])
def test_truncated_bptt_with_the_triton_conv_equals_the_torch_conv(chunk_bp):
    """Two TBPTT windows, the second from the first's detached states: its loss and gradients."""
    seq = torch.randint(5, 10, (2, 27), generator=torch.Generator().manual_seed(4))
    results = []
    for model in _pair():
        _, _, states = tbptt_step(model, seq[:, :13], seq[:, 1:14], chunk_bp=chunk_bp)
        loss, _, _ = tbptt_step(model, seq[:, 13:26], seq[:, 14:], states, chunk_bp=chunk_bp)
        results.append((loss.detach(), torch.autograd.grad(loss, list(model.parameters()))))
    (want_loss, want_grads), (got_loss, got_grads) = results
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-5)
    _assert_grads_between(got_grads, want_grads)


def test_carried_conv_state_is_the_same():
    """The state a chunk returns, and the next chunk's output from it: the first layer's conv state is built from
    in_proj alone, so the two kernels give it bit for bit."""
    torch_model, triton_model = _pair()
    ids = torch.randint(5, 10, (3, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        outs = []
        for model in (torch_model, triton_model):
            _, states = model.trunk(ids[:, :2])  # shorter than d_conv: the state is left zero-padded
            residual, states = model.trunk(ids[:, 2:], states)
            outs.append((residual, states))
    (want, want_states), (got, got_states) = outs
    assert torch.equal(got_states[0].conv, want_states[0].conv)
    for g, w in zip(got_states, want_states):
        torch.testing.assert_close(g.conv, w.conv)
        torch.testing.assert_close(g.ssm, w.ssm, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_model_runs_close():
    """Under bf16 autocast (as training runs), the fused conv's fp32 arithmetic stays within bf16 rounding."""
    torch_model, triton_model = _pair()
    ids = torch.randint(5, 10, (2, 33), generator=torch.Generator().manual_seed(3))
    results = []
    for model in (torch_model, triton_model):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(ids)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
        results.append((loss.detach(), torch.autograd.grad(loss, list(model.parameters()))))
    (want_loss, want_grads), (got_loss, got_grads) = results
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-2, atol=1e-2)
    for g, w in zip(got_grads, want_grads):
        assert torch.isfinite(g).all() and rel_err(g, w) < 5e-2
