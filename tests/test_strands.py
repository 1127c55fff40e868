"""Bidirectional and reverse-complement-equivariant models (Caduceus): exact RC equivariance of the per-position
outputs, an RC-invariant classifier, padding that never reaches a real position from either end, every scan
backend, save/load, and the clear refusals (recurrent step, generation, carried state, chunks)."""

from __future__ import annotations

import pytest
import torch

from mambadna import kernels
from mambadna.config import tiny
from mambadna.model import MambaClassifier, MambaLM
from mambadna.objective import lm_loss
from mambadna.strands import Reverser, complement_ids
from mambadna.tokenizer import PAD_ID, reverse_complement

pytestmark = pytest.mark.usefixtures("single_thread")

NON_CAUSAL = {
    "bidirectional": dict(bidirectional=True),
    "bidirectional_untied": dict(bidirectional=True, bidirectional_weight_tie=False),
    "rc": dict(rc_equivariant=True),
    "rc_bidirectional": dict(bidirectional=True, rc_equivariant=True),
}
RC = ["rc", "rc_bidirectional"]
LENGTHS = (17, 9, 1, 13)  # odd, one of length 1, the batch padded to 17


def _model(options, cls=MambaLM, **kwargs):
    torch.manual_seed(0)
    return cls(tiny(**{"d_model": 16, "d_state": 4, **options}), **kwargs).eval()


def _batch(lengths=LENGTHS, seed=0):
    """A right-padded batch of random bases (N included), its mask, the rows, and the batch of their reverse
    complements padded the same way (not `reverse_complement` of the padded batch, which would be left-padded)."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(5, 10, (n,), generator=g) for n in lengths]
    ids = torch.full((len(rows), max(lengths)), PAD_ID)
    rc_ids = ids.clone()
    mask = torch.zeros(ids.shape, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)], rc_ids[i, : len(row)], mask[i, : len(row)] = row, reverse_complement(row), True
    return ids, rc_ids, mask, rows


def _rc_violation(model, ids, rc_ids, mask):
    """Largest |f(RC x) - RC f(x)| over real positions, for logits (complemented ids) and per-position features."""
    comp = complement_ids(model.config.vocab_size)
    with torch.no_grad():
        logits, logits_rc = model(ids, mask), model(rc_ids, mask)
        hidden, hidden_rc = model.hidden_states(ids, attention_mask=mask), model.hidden_states(rc_ids, attention_mask=mask)
    worst = 0.0
    for i, n in enumerate(mask.sum(-1).tolist()):
        worst = max(worst, (logits_rc[i, :n] - logits[i, :n].flip(0)[:, comp]).abs().max().item(),
                    (hidden_rc[i, :n] - hidden[i, :n].flip(0)).abs().max().item())
    return worst, logits.abs().max().item()


@pytest.mark.parametrize("name", RC)
@pytest.mark.parametrize("backend", ["ref", "chunked"])
def test_rc_equivariance_of_per_position_outputs_is_exact(name, backend):
    model = _model({**NON_CAUSAL[name], "scan_backend": backend})
    ids, rc_ids, mask, _ = _batch()
    worst, scale = _rc_violation(model, ids, rc_ids, mask)
    assert worst <= 1e-6 * max(1.0, scale), worst


@pytest.mark.parametrize("name", ["causal", "bidirectional"])
def test_control_models_without_rc_sharing_are_not_equivariant(name):
    """The check above detects a violation: models without RC parameter sharing fail it by far."""
    model = _model(NON_CAUSAL.get(name, {}))
    worst, _ = _rc_violation(model, *_batch()[:3])
    assert worst > 1e-3


@pytest.mark.parametrize("name", RC)
@pytest.mark.parametrize("pooling", ["mean", "last", "cls"])
def test_rc_equivariant_classifier_is_rc_invariant(name, pooling):
    model = _model(NON_CAUSAL[name], MambaClassifier, num_classes=3, pooling=pooling)
    torch.nn.init.normal_(model.head.weight)  # a head far from zero, so that differences would show
    ids, rc_ids, mask, _ = _batch(seed=1)
    with torch.no_grad():
        logits, logits_rc = model(ids, mask), model(rc_ids, mask)
        control = _model({}, MambaClassifier, num_classes=3, pooling=pooling)
        control_gap = (control(ids, mask) - control(rc_ids, mask)).abs().max().item()
    torch.testing.assert_close(logits_rc, logits, rtol=0, atol=1e-6 * max(1.0, logits.abs().max().item()))
    assert control_gap > 1e-4  # a causal classifier is not invariant


@pytest.mark.parametrize("name", ["causal", *NON_CAUSAL])
def test_padded_batch_equals_each_sequence_alone(name):
    model = _model(NON_CAUSAL.get(name, {}))
    ids, _, mask, rows = _batch()
    with torch.no_grad():
        logits = model(ids, mask)
        hidden, pooled = model.embed(ids, mask, pooling="mean")
        for i, row in enumerate(rows):
            alone_hidden, alone_pooled = model.embed(row[None])
            torch.testing.assert_close(logits[i, : len(row)], model(row[None])[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(hidden[i, : len(row)], alone_hidden[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(pooled[i], alone_pooled[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["bidirectional", "rc"])
def test_the_mask_is_what_keeps_padding_out(name):
    """Control: with padding counted as real tokens, the reverse reading starts in the padding and every real
    position of a padded row changes; a causal model does not care. Without a mask, padding ids are refused."""
    ids, _, mask, _ = _batch()
    everything = torch.ones_like(mask)
    with torch.no_grad():
        for options, should_change in ((NON_CAUSAL[name], True), ({}, False)):
            model = _model(options)
            gap = (model(ids, everything)[1, :9] - model(ids, mask)[1, :9]).abs().max().item()
            assert (gap > 1e-4) == should_change, (options, gap)
        with pytest.raises(ValueError, match="padding .* but no attention_mask"):
            _model(NON_CAUSAL[name])(ids)


@pytest.mark.parametrize("name", NON_CAUSAL)
def test_non_causal_models_see_the_bases_after_each_position(name):
    model = _model(NON_CAUSAL[name])
    ids = _batch((20,))[0]
    changed = ids.clone()
    changed[0, 12:] = 5 + (changed[0, 12:] - 4) % 5
    with torch.no_grad():
        assert not torch.allclose(model(ids)[:, :12], model(changed)[:, :12], atol=1e-4)


def test_reverser_keeps_padding_in_place_and_is_its_own_inverse():
    x = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]])
    reverse = Reverser(x != PAD_ID)
    assert reverse(x).tolist() == [[7, 6, 5, 0, 0], [9, 8, 7, 6, 5]]
    assert torch.equal(reverse(reverse(x)), x)
    features = torch.randn(2, 5, 3)
    assert torch.equal(reverse(features)[1], features[1].flip(0))
    assert torch.equal(Reverser(torch.ones(2, 5, dtype=torch.bool))(features), features.flip(1))
    assert complement_ids(16).tolist() == [0, 1, 2, 3, 4, 8, 7, 6, 5, 9, 10, 11, 12, 13, 14, 15]


def test_parameters_and_weight_tying():
    causal, bi, untied, rc = (_model(NON_CAUSAL.get(n, {})) for n in ("causal", "bidirectional",
                                                                     "bidirectional_untied", "rc"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(rc) == count(causal)  # RCPS shares every weight between the strands
    assert count(causal) < count(bi) < count(untied)
    for layer in bi.layers:
        assert layer.mixer_rev.in_proj is layer.mixer.in_proj and layer.mixer_rev.out_proj is layer.mixer.out_proj
        assert layer.mixer_rev.conv1d is not layer.mixer.conv1d and layer.mixer_rev.A_log is not layer.mixer.A_log
    assert untied.layers[0].mixer_rev.in_proj is not untied.layers[0].mixer.in_proj
    assert not any("mixer_rev" in k for k in causal.state_dict())


@pytest.mark.parametrize("name", NON_CAUSAL)
def test_save_load_round_trip(name, tmp_path):
    model = _model(NON_CAUSAL[name])
    model.save_pretrained(tmp_path / "lm")
    loaded = MambaLM.from_pretrained(tmp_path / "lm").eval()
    assert loaded.config == model.config
    if model.config.bidirectional and model.config.bidirectional_weight_tie:
        assert loaded.layers[0].mixer_rev.in_proj is loaded.layers[0].mixer.in_proj
    ids, _, mask, _ = _batch()
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask), model(ids, mask))
    classifier = MambaClassifier.from_pretrained_backbone(tmp_path / "lm", num_classes=2, pooling="mean")
    classifier.save_pretrained(tmp_path / "clf")
    again = MambaClassifier.from_pretrained(tmp_path / "clf").eval()
    with torch.no_grad():
        assert torch.equal(again(ids, mask), classifier.eval()(ids, mask))


def _loss_and_grads(model, ids, mask):
    targets = torch.where(mask, ids, torch.full_like(ids, -100))
    loss, _, _ = lm_loss(model, ids, targets, attention_mask=mask)
    return loss.detach(), torch.autograd.grad(loss, list(model.parameters()))


@pytest.mark.parametrize("name", ["bidirectional_untied", "rc_bidirectional"])
def test_ref_and_chunked_scans_give_the_same_loss_and_gradients(name):
    ids, _, mask, _ = _batch()
    results = {b: _loss_and_grads(_model({**NON_CAUSAL[name], "scan_backend": b}).train(), ids, mask)
               for b in ("ref", "chunked")}
    (loss_ref, grads_ref), (loss_chunked, grads_chunked) = results["ref"], results["chunked"]
    torch.testing.assert_close(loss_chunked, loss_ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads_chunked, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_triton_scan_in_the_model(monkeypatch):
    """The Triton kernel (in Triton's CPU interpreter here; `selective_scan` itself refuses CPU tensors for it)
    under a bidirectional RC-equivariant model: the same outputs and gradients as the reference scan, and exact
    RC equivariance. Tiny shapes: the interpreter is slow."""
    pytest.importorskip("triton")
    from mambadna import model as model_module
    from mambadna.kernels.gpu import selective_scan_triton

    def scan(*args, backend=None, kernel="auto", **kwargs):
        if backend == "triton" and not args[0].is_cuda:
            return selective_scan_triton(*args, version=1, chunk_size=16, **kwargs)
        return kernels.selective_scan(*args, backend=backend, kernel=kernel, **kwargs)

    monkeypatch.setattr(model_module, "selective_scan", scan)
    ids, rc_ids, mask, _ = _batch((17, 6))  # 17: a chunk boundary inside the longer row
    options = dict(bidirectional=True, rc_equivariant=True, n_layer=1, d_model=8)
    triton_model = _model({**options, "scan_backend": "triton"})
    comp = complement_ids(16)
    with torch.no_grad():
        logits, logits_rc = triton_model(ids, mask), triton_model(rc_ids, mask)
    for i, n in enumerate(mask.sum(-1).tolist()):
        torch.testing.assert_close(logits_rc[i, :n], logits[i, :n].flip(0)[:, comp], rtol=0, atol=1e-6)
    loss, grads = _loss_and_grads(triton_model.train(), ids, mask)
    want_loss, want_grads = _loss_and_grads(_model({**options, "scan_backend": "ref"}).train(), ids, mask)
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, want_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_activation_checkpointing_equals_plain_for_a_bidirectional_model():
    ids, _, mask, _ = _batch()
    plain = _model(NON_CAUSAL["rc_bidirectional"]).train()
    loss, grads = _loss_and_grads(plain, ids, mask)
    plain.activation_checkpointing = True
    loss_ckpt, grads_ckpt = _loss_and_grads(plain, ids, mask)
    torch.testing.assert_close(loss_ckpt, loss)
    for got, want in zip(grads_ckpt, grads):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", NON_CAUSAL)
def test_non_causal_models_refuse_recurrence_and_chunks(name):
    from mambadna.inference import generate, prefill

    model = _model(NON_CAUSAL[name])
    ids = _batch((12,))[0]
    with pytest.raises(ValueError, match="generation .* needs a causal model"):
        model.generate(ids, 4)
    with pytest.raises(ValueError, match="reads each sequence from both ends.*recurrent step need a causal model"):
        model.step(ids[:, 0], model.zero_states(1))
    for call in (lambda: prefill(model, ids, model.zero_states(1)), lambda: generate(model, ids, 2),
                 lambda: lm_loss(model, ids, ids, states=model.zero_states(1))):
        with pytest.raises(ValueError, match="no left-to-right state"):
            call()
    for call in (lambda: lm_loss(model, ids, ids, chunk_bp=4), lambda: model.embed(ids, chunk_bp=4)):
        with pytest.raises(ValueError, match=r"chunk_bp \(--chunk-bp\) needs a causal model: a .* model reads"):
            call()


@pytest.mark.parametrize("options, message", [
    (dict(bidirectional_weight_tie=False), "bidirectional_weight_tie=False only applies with bidirectional"),
    (dict(rc_equivariant=True, tokenizer="byte", vocab_size=264), "rc_equivariant needs the nucleotide tokenizer"),
    (dict(bidirectional=1), "bidirectional must be a bool"),
])
def test_config_validation(options, message):
    with pytest.raises(ValueError, match=message):
        tiny(**options)


def test_config_kind_and_causality():
    assert tiny().causal and tiny().kind == "causal"
    assert not tiny(bidirectional=True).causal
    assert tiny(bidirectional=True, rc_equivariant=True).kind == "bidirectional+rc_equivariant"
