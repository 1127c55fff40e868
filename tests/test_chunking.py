"""Sequence-chunked recomputation: equal to the unchunked model in loss and every gradient, O(chunk) storage."""

import pytest
import torch
import torch.nn.functional as F
from grad_checks import assert_grads_close

from mambadna.chunking import run_chunked
from mambadna.model import MambaLM
from mambadna.objective import lm_loss, lm_loss_mean, next_token_targets


@pytest.fixture
def model(tiny_config, seeded):
    return MambaLM(tiny_config)


def _ids(b, l, seed=1):
    return torch.randint(5, 10, (b, l), generator=torch.Generator().manual_seed(seed))


def _reference(model, ids, labels=None):
    """Unchunked summed next-token loss and the gradients it gives."""
    labels = ids if labels is None else labels
    logits = model(ids)  # (b, l, V)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), reduction="sum")
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return loss.detach(), grads


def chunked_lm_loss(model, ids, chunk_bp, labels=None):
    """(loss_sum, n_tokens) of next-token prediction over ids (b, l): position t scored against labels[:, t+1]."""
    labels = ids if labels is None else labels
    loss_sum, n_tokens, _ = lm_loss(model, ids[:, :-1], labels[:, 1:], chunk_bp)
    return loss_sum, n_tokens


# chunks shorter than d_conv (the conv state spans several chunks), not dividing l-1, exactly l-1, beyond it,
# and None (one plain pass)
@pytest.mark.parametrize("chunk_bp, l", [(1, 12), (3, 39), (16, 39), (38, 39), (64, 39), (None, 39)])
def test_chunked_loss_and_every_gradient_equal_unchunked(model, chunk_bp, l):
    ids = _ids(2, l)
    want_loss, want_grads = _reference(model, ids)
    loss_sum, n_tokens = chunked_lm_loss(model, ids, chunk_bp)
    grads = torch.autograd.grad(loss_sum, list(model.parameters()))
    assert int(n_tokens) == 2 * (l - 1)
    torch.testing.assert_close(loss_sum.detach(), want_loss, rtol=1e-5, atol=1e-5)
    assert_grads_close(grads, want_grads)


def test_mean_helper_matches_cross_entropy_mean(model):
    ids = _ids(1, 50)
    logits = model(ids)
    want = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    torch.testing.assert_close(lm_loss_mean(model, *next_token_targets(ids), 7), want, rtol=1e-5, atol=1e-6)


def test_labels_with_ignored_positions(model):
    ids = _ids(2, 30)
    labels = ids.clone()
    labels[0, 10:20] = -100
    labels[1, :5] = -100
    want_loss, want_grads = _reference(model, ids, labels)
    loss_sum, n_tokens = chunked_lm_loss(model, ids, 8, labels=labels)
    assert int(n_tokens) == int((labels[:, 1:] != -100).sum())
    torch.testing.assert_close(loss_sum.detach(), want_loss, rtol=1e-5, atol=1e-5)
    assert_grads_close(torch.autograd.grad(loss_sum, list(model.parameters())), want_grads)


def test_last_token_of_a_chunk_predicts_the_first_of_the_next(model):
    ids = _ids(1, 24)
    chunk_bp = 8
    labels = torch.full_like(ids, -100)
    labels[0, chunk_bp] = ids[0, chunk_bp]  # only the label of chunk 2's first position is scored
    loss_sum, n_tokens = chunked_lm_loss(model, ids, chunk_bp, labels=labels)
    with torch.no_grad():
        logits = model(ids)  # (1, l, V)
    want = -torch.log_softmax(logits[0, chunk_bp - 1], -1)[ids[0, chunk_bp]]
    assert int(n_tokens) == 1
    torch.testing.assert_close(loss_sum.detach(), want, rtol=1e-5, atol=1e-6)


def test_only_boundary_states_and_ids_are_kept_between_forward_and_backward(model):
    """Tensors the autograd graph keeps outside the checkpoint regions must not grow with l·d."""
    b, l, chunk_bp = 1, 256, 64
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_sum, _ = chunked_lm_loss(model, _ids(b, l), chunk_bp)
    d_inner = model.config.d_inner
    assert max(sizes, default=0) <= b * d_inner * max(model.config.d_state, model.config.d_conv)
    loss_sum.backward()
    # control: the unchunked model keeps (b, l, d)-sized activations, which the bound above excludes
    sizes.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(_ids(b, l))
    assert max(sizes) >= b * l * model.config.d_model


def test_backward_recomputes_each_chunk_once_in_reverse_order(model):
    l, chunk_bp = 41, 8
    starts = []
    handle = model.embedding.register_forward_hook(lambda mod, args, out: starts.append(args[0].storage_offset()))
    try:
        loss_sum, _ = chunked_lm_loss(model, _ids(1, l), chunk_bp)
        forward = list(starts)
        starts.clear()
        loss_sum.backward()
    finally:
        handle.remove()
    chunk_starts = list(range(0, l - 1, chunk_bp))
    assert forward == chunk_starts
    assert starts == chunk_starts[::-1]


def test_no_grad_runs_without_checkpointing_and_equals(model):
    ids = _ids(2, 33)
    with torch.no_grad():
        loss_sum, _ = chunked_lm_loss(model, ids, 5)
    want, _ = _reference(model, ids)
    assert not loss_sum.requires_grad
    torch.testing.assert_close(loss_sum, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_bp", [1, 10, 30])
def test_chunked_hidden_states_equal_unchunked(model, chunk_bp):
    ids = _ids(2, 25)
    want = model.hidden_states(ids).detach()
    parts = []
    with torch.no_grad():
        run_chunked(model, ids, chunk_bp, lambda residual, start, end: parts.append(model.norm_f(residual)) or ())
    got = torch.cat(parts, 1)
    assert got.shape == want.shape and not got.requires_grad
    assert [p.shape[1] for p in parts] == [min(chunk_bp, 25 - s) for s in range(0, 25, chunk_bp)]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_trunk_continues_a_sequence_from_its_states(model):
    ids = _ids(2, 30)
    with torch.no_grad():
        whole = model.hidden_states(ids)
        _, states = model.trunk(ids[:, :11])
        first = model.hidden_states(ids[:, :11])
        second = model.hidden_states(ids[:, 11:], states)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-4, atol=1e-5)


def test_block_checkpointing_equals_plain_forward_and_gradients(model):
    ids = _ids(2, 20)
    want_logits = model(ids)
    want_grads = torch.autograd.grad(want_logits.square().sum(), list(model.parameters()))
    model.activation_checkpointing = True
    logits = model(ids)
    torch.testing.assert_close(logits, want_logits)
    assert_grads_close(torch.autograd.grad(logits.square().sum(), list(model.parameters())), want_grads, 1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(chunk_bp=0), "chunk_bp must be a positive int"),
        (dict(chunk_bp=2.5), "chunk_bp must be a positive int"),
        (dict(chunk_bp=4, targets=torch.zeros(2, 9, dtype=torch.long)), "targets must have the shape"),
        (dict(chunk_bp=4, targets=torch.full((2, 10), 99)), r"targets must lie in \[0, 16\)"),
        (dict(chunk_bp=4, targets=torch.zeros(2, 10)), "targets must be an int64/int32 tensor"),
    ],
)
def test_bad_arguments_are_rejected(model, kwargs, match):
    kwargs.setdefault("targets", _ids(2, 10))
    with pytest.raises(ValueError, match=match):
        lm_loss(model, _ids(2, 10), **kwargs)


def test_sequence_of_one_token_is_rejected(model):
    with pytest.raises(ValueError, match="at least 2 tokens"):
        next_token_targets(_ids(1, 1))


@pytest.mark.parametrize("pooling", ["mean", "last", "cls"])
def test_chunked_classifier_equals_unchunked_in_loss_and_every_gradient(pooling, seeded):
    """Classification at any length: the classifier run chunk by chunk with recomputation (mean as a running sum,
    last from the chunk holding each row's last real base, cls from the first chunk) is the unchunked one."""
    from mambadna.config import tiny
    from mambadna.model import MambaClassifier
    from mambadna.objective import classification_loss

    model = MambaClassifier(tiny(d_model=32, d_state=8), 3, pooling)
    ids = _ids(3, 41)
    mask = torch.ones(3, 41, dtype=torch.bool)
    mask[1, 30:] = False  # right padding whose last real base (29) is inside a chunk
    mask[2, 24:] = False  # ... and one whose last real base ends a chunk exactly (chunk 8: 16..23)
    ids[~mask] = 0
    labels = torch.tensor([0, 2, 1])
    params = list(model.parameters())
    want, want_logits = classification_loss(model, ids, mask, labels)
    want_grads = torch.autograd.grad(want, params)
    for chunk_bp in (3, 8, 13, 64):  # shorter than d_conv, ending a row's last base, uneven, one chunk
        got, logits = classification_loss(model, ids, mask, labels, chunk_bp=chunk_bp)
        torch.testing.assert_close(logits, want_logits, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert_grads_close(torch.autograd.grad(got, params), want_grads)
