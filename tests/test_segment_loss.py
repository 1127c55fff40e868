"""The classifier's segment loss (finetune's segment_bp): each stretch of a long training window classified on its
own, from the same pass, against a plain-PyTorch reference, chunked and not, with padding and uneven segments."""

import pytest
import torch
import torch.nn.functional as F
from grad_checks import assert_grads_close

from mambadna.config import tiny
from mambadna.model import MambaClassifier
from mambadna.objective import classification_loss
from mambadna.pooling import segment_means


def _batch(b=3, l=41, seed=1):
    ids = torch.randint(0, 4, (b, l), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(b, l, dtype=torch.bool)
    mask[1, 30:] = False  # padding inside a segment
    mask[2, 20:] = False  # ... and whole segments of padding at 8-bp segments (24..31, 32..39, 40)
    ids[~mask] = 0
    return ids, mask, torch.tensor([0, 2, 1])


def _reference(model, ids, mask, labels, segment_bp):
    """The loss written out: the whole window's cross-entropy plus the mean over segments that hold a real base of
    each segment's cross-entropy, every pooled vector the mean of the final hidden states over its real bases."""
    hidden = model.backbone.final_hidden(model.backbone.trunk(ids, attention_mask=mask)[0])  # (b, l, d)
    w = mask.float().unsqueeze(-1)
    whole = F.cross_entropy(model.head((hidden * w).sum(1) / w.sum(1)), labels)
    losses = []
    for i in range(ids.shape[0]):
        for s in range(0, ids.shape[1], segment_bp):
            n = w[i, s:s + segment_bp].sum()
            if n > 0:
                pooled = (hidden[i, s:s + segment_bp] * w[i, s:s + segment_bp]).sum(0) / n
                losses.append(F.cross_entropy(model.head(pooled)[None], labels[i:i + 1]))
    return whole + torch.stack(losses).mean()


@pytest.mark.parametrize("segment_bp", [8, 13, 40])  # dividing neither 41 nor the chunks; one short last segment
def test_segment_loss_equals_the_reference_in_loss_and_every_gradient(segment_bp, seeded):
    model = MambaClassifier(tiny(d_model=32, d_state=8), 3, "mean")
    ids, mask, labels = _batch()
    params = list(model.parameters())
    want = _reference(model, ids, mask, labels, segment_bp)
    want_grads = torch.autograd.grad(want, params, allow_unused=True)
    plain_logits = model(ids, mask)
    for chunk_bp in (None, 3, 16):  # one pass; chunks shorter than d_conv; chunks straddling segments
        got, logits = classification_loss(model, ids, mask, labels, chunk_bp=chunk_bp, segment_bp=segment_bp)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(logits, plain_logits, rtol=1e-5, atol=1e-6)  # the window's own logits
        got_grads = torch.autograd.grad(got, params, allow_unused=True)
        assert_grads_close([g for g in got_grads if g is not None], [g for g in want_grads if g is not None])


def test_segment_means_of_an_rc_equivariant_model_pool_like_embed(seeded):
    """Both strands' features averaged (final_hidden) pool to embed's mean: the same vector for a sequence and its
    reverse complement's whole-window mean."""
    model = MambaClassifier(tiny(d_model=32, d_state=8, rc_equivariant=True), 3, "mean")
    ids, mask, _ = _batch()
    pooled, segments, counts = segment_means(model.backbone, ids, mask, 8)
    _, want = model.backbone.embed(ids, mask, "mean")
    torch.testing.assert_close(pooled, want, rtol=1e-5, atol=1e-6)
    assert segments.shape == (3, 6, 32) and counts[2].tolist() == [8, 8, 4, 0, 0, 0]


@pytest.mark.parametrize("pooling, l, segment_bp", [("mean", 41, 41), ("mean", 41, 64), ("last", 41, 8)])
def test_no_segment_loss_where_it_does_not_apply(pooling, l, segment_bp, seeded):
    """A window no longer than a segment, and poolings other than mean (a segment has no last base of its own
    in a right-padded batch's sense), train on the plain loss."""
    model = MambaClassifier(tiny(d_model=32, d_state=8), 3, pooling)
    ids, mask, labels = _batch(l=l)
    want, _ = classification_loss(model, ids, mask, labels)
    got, _ = classification_loss(model, ids, mask, labels, segment_bp=segment_bp)
    torch.testing.assert_close(got, want)


def test_the_task_adds_segments_in_training_only(seeded):
    from mambadna.run_config import OptimSpec
    from mambadna.tasks.classify import ClassifyTask

    model = MambaClassifier(tiny(d_model=32, d_state=8), 3, "mean")
    task = ClassifyTask(model, OptimSpec(), ["a", "b", "c"], segment_bp=8)
    ids, mask, labels = _batch()
    batch = {"input_ids": ids, "attention_mask": mask, "label": labels}
    task.log = lambda *a, **k: None  # outside a Trainer
    plain, _ = classification_loss(model, ids, mask, labels)
    torch.testing.assert_close(task._step("val", batch), plain)
    torch.testing.assert_close(task._step("train", batch), _reference(model, ids, mask, labels, 8))


def test_segment_bp_must_be_positive_and_with_mean_pooling():
    from mambadna.run_config import FinetuneConfig

    with pytest.raises(ValueError, match="must be a positive number of bases"):
        FinetuneConfig(segment_bp=0)
    with pytest.raises(ValueError, match="with pooling=mean.*pooling='last'"):
        FinetuneConfig(segment_bp=512, pooling="last")
    assert FinetuneConfig(segment_bp=512).segment_bp == 512
