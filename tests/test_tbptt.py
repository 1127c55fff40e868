"""Truncated BPTT: carried state makes window 2 see window 1 exactly; gradients stop at the window boundary."""

import math

import pytest
import torch
import torch.nn.functional as F

from mambadna.data.streams import ContigStreams
from mambadna.model import LayerState, MambaLM
from mambadna.tbptt import TBPTTRunner, reset_states, tbptt_step, train_tbptt

W = 20


@pytest.fixture
def model(tiny_config, seeded):
    return MambaLM(tiny_config)


@pytest.fixture
def seq():
    return torch.randint(5, 10, (2, 2 * W + 1), generator=torch.Generator().manual_seed(2))


def lm_loss_sum(logits, targets):
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="sum")


def _windows(seq):
    """Two consecutive windows with aligned next-base targets, as ContigStreams yields them."""
    first = {"input_ids": seq[:, :W], "targets": seq[:, 1 : W + 1], "reset": torch.tensor([True, True])}
    second = {"input_ids": seq[:, W : 2 * W], "targets": seq[:, W + 1 :], "reset": torch.tensor([False, False])}
    return first, second


def test_window_two_with_carried_state_equals_the_unchunked_forward(model, seq):
    first, second = _windows(seq)
    runner = TBPTTRunner()
    runner.step(model, first)
    loss2 = runner.step(model, second)
    with torch.no_grad():
        logits = model(seq[:, : 2 * W])  # (b, 2W, V): one forward over windows 1+2
    want = F.cross_entropy(logits[:, W:].flatten(0, 1), seq[:, W + 1 :].flatten())
    torch.testing.assert_close(loss2.detach(), want, rtol=1e-5, atol=1e-6)
    # control: the same window from a fresh state is a different loss, so the carried state is what matched
    fresh = TBPTTRunner().step(model, {**second, "reset": torch.tensor([True, True])})
    assert abs(float(fresh.detach()) - float(want)) > 1e-4


@pytest.mark.parametrize("chunk_bp", [None, 6])
def test_gradients_stop_at_the_window_boundary(model, seq, chunk_bp):
    first, second = _windows(seq)
    params = list(model.parameters())
    _, _, states = tbptt_step(model, first["input_ids"], first["targets"], chunk_bp=chunk_bp)
    assert all(not s.conv.requires_grad and not s.ssm.requires_grad for s in states)
    loss_sum, _, _ = tbptt_step(model, second["input_ids"], second["targets"], states, chunk_bp=chunk_bp)
    grads = torch.autograd.grad(loss_sum, params)

    # reference: window 1's states taken as constants, window 2 differentiated on its own
    with torch.no_grad():
        _, frozen = model.trunk(first["input_ids"])
    hidden = model.hidden_states(second["input_ids"], frozen)
    want = torch.autograd.grad(lm_loss_sum(model.lm_head(hidden), second["targets"]), params)
    for g, w in zip(grads, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)

    # control: full backpropagation through window 1 gives different gradients
    hidden = model.hidden_states(seq[:, : 2 * W])
    full = torch.autograd.grad(lm_loss_sum(model.lm_head(hidden[:, W:]), second["targets"]), params)
    assert any(not torch.allclose(g, f, rtol=1e-3, atol=1e-6) for g, f in zip(grads, full))


def test_incoming_states_receive_no_gradient(model, seq):
    first, second = _windows(seq)
    states = [LayerState(s.conv.requires_grad_(), s.ssm.requires_grad_()) for s in model.zero_states(2)]
    loss_sum, _, _ = tbptt_step(model, second["input_ids"], second["targets"], states)
    loss_sum.backward()
    assert all(s.conv.grad is None and s.ssm.grad is None for s in states)
    assert model.embedding.weight.grad is not None


def test_reset_zeroes_only_the_flagged_streams(model):
    states = [LayerState(torch.ones(3, 4, 2), torch.full((3, 4, 5), 2.0)) for _ in range(2)]
    out = reset_states(states, torch.tensor([False, True, False]))
    for conv, ssm in ((s.conv, s.ssm) for s in out):
        assert conv[1].abs().sum() == 0 and ssm[1].abs().sum() == 0
        assert bool((conv[[0, 2]] == 1).all()) and bool((ssm[[0, 2]] == 2).all())


def test_runner_rejects_bad_batches(model, seq):
    first, _ = _windows(seq)
    runner = TBPTTRunner()
    with pytest.raises(ValueError, match="'reset' is missing"):
        runner.step(model, {"input_ids": first["input_ids"], "targets": first["targets"]})
    runner.step(model, first)
    with pytest.raises(ValueError, match="carried states hold 2 streams"):
        runner.step(model, {k: v[:1] for k, v in first.items()})
    with pytest.raises(ValueError, match="targets must have the shape"):
        tbptt_step(model, first["input_ids"], first["targets"][:, :-1])
    with pytest.raises(ValueError, match="states hold batch size 2, got 1"):
        tbptt_step(model, first["input_ids"][:1], first["targets"][:1], runner.states)


def test_training_on_a_genome_lowers_the_loss(model, tmp_path, real_dna):
    path = tmp_path / "g.fa"
    path.write_text(">g\n" + real_dna + "\n")
    ds = ContigStreams(path, 32, 2, split="all", shuffle=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = train_tbptt(model, [ds[i] for i in range(len(ds))] * 3, opt, max_steps=24)
    assert len(losses) == 24 and all(math.isfinite(x) for x in losses)
    assert losses[0] > 2.5  # about ln(16): every id equally likely at init
    assert sum(losses[-4:]) / 4 < 1.6  # it has at least learned that DNA is four letters
