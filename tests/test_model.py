import math

import pytest
import torch
import torch.nn.functional as F

from mambadna.config import MambaConfig, base, tiny
from mambadna.model import MambaClassifier, MambaLM, MambaMixer
from mambadna.tokenizer import NucleotideTokenizer

pytestmark = pytest.mark.usefixtures("single_thread")


def _ids(b, l, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, 10, (b, l), generator=g)


def test_output_shapes(tiny_config, seeded):
    model = MambaLM(tiny_config)
    ids = _ids(3, 17)
    assert model(ids).shape == (3, 17, 16)
    assert model.hidden_states(ids).shape == (3, 17, tiny_config.d_model)
    per_pos, pooled = model.embed(ids, pooling="last")
    assert per_pos.shape == (3, 17, tiny_config.d_model) and pooled.shape == (3, tiny_config.d_model)


def test_bad_inputs_raise_clear_errors(tiny_config):
    model = MambaLM(tiny_config)
    with pytest.raises(ValueError, match=r"must lie in \[0, 16\), got values 5..16"):
        model(torch.tensor([[5, 16]]))
    with pytest.raises(ValueError, match=r"must be \(b, l\)"):
        model(torch.tensor([5, 6]))
    with pytest.raises(ValueError, match="int64/int32"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="pooling must be one of"):
        model.embed(_ids(1, 4), pooling="max")
    with pytest.raises(ValueError, match="right-padded"):
        model.embed(_ids(1, 4), torch.tensor([[False, True, True, True]]))


def test_init_follows_mamba_ssm(seeded):
    cfg = tiny(n_layer=4)
    model = MambaLM(cfg)
    n = cfg.d_state
    for layer in model.layers:
        mixer = layer.mixer
        assert torch.allclose(mixer.A_log, torch.log(torch.arange(1, n + 1.0)).expand(cfg.d_inner, n))
        assert torch.all(mixer.D == 1)
        dt = F.softplus(mixer.dt_proj.bias)
        assert dt.min() >= cfg.dt_min * 0.999 and dt.max() <= cfg.dt_max * 1.001
        # log-uniform: the mean of log dt sits near the middle of [log dt_min, log dt_max]
        mid = (math.log(cfg.dt_min) + math.log(cfg.dt_max)) / 2
        assert abs(dt.log().mean().item() - mid) < 0.5
        bound = 1 / math.sqrt(cfg.d_inner) / math.sqrt(cfg.n_layer)  # kaiming-uniform bound, rescaled
        assert mixer.out_proj.weight.abs().max() <= bound + 1e-6
        assert mixer.out_proj.weight.abs().max() > 0.8 * bound
    assert model.lm_head.weight is model.embedding.weight
    assert abs(model.embedding.weight.std().item() - 0.02) < 0.005


def test_untied_head_is_separate():
    model = MambaLM(tiny(tie_embeddings=False))
    assert model.lm_head.weight is not model.embedding.weight


def test_base_preset_has_about_3_5m_parameters():
    n_params = sum(p.numel() for p in MambaLM(base()).parameters())
    assert 3.3e6 < n_params < 3.7e6


def test_model_is_causal(tiny_config, seeded):
    model = MambaLM(tiny_config)
    ids = _ids(1, 20)
    changed = ids.clone()
    changed[0, 12:] = 5 + (changed[0, 12:] - 4) % 5
    a, b = model(ids), model(changed)
    assert torch.allclose(a[:, :12], b[:, :12], atol=1e-6)
    assert not torch.allclose(a[:, 12:], b[:, 12:], atol=1e-4)


@pytest.mark.parametrize("d_conv", [1, 4])
def test_mixer_in_chunks_carrying_state_equals_whole_sequence(d_conv, seeded):
    mixer = MambaMixer(tiny(d_model=32, d_conv=d_conv))
    hidden = torch.randn(2, 23, 32)
    whole, _ = mixer(hidden)
    state = None
    outs = []
    for start, end in [(0, 2), (2, 11), (11, 23)]:  # the first chunk is shorter than d_conv
        out, state = mixer(hidden[:, start:end], state)
        outs.append(out)
    conv_state, ssm_state = state.conv, state.ssm
    assert conv_state.shape == (2, 64, d_conv) and ssm_state.shape == (2, 64, 16) and ssm_state.dtype == torch.float32
    torch.testing.assert_close(torch.cat(outs, 1), whole, atol=1e-5, rtol=1e-5)


def test_loss_decreases_on_real_dna(real_dna, tiny_config, seeded):
    model = MambaLM(tiny_config)
    ids = torch.from_numpy(NucleotideTokenizer().encode(real_dna, add_special_tokens=True)).unsqueeze(0)  # (1, l)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > math.log(16) - 0.3  # starts near uniform over the padded vocab
    assert losses[-1] < 0.6 * losses[0], losses
    assert losses[-1] < 1.5, losses  # mass has moved onto A C G T (log 4 = 1.39 is the unigram level)


@pytest.mark.parametrize("pooling", ["mean", "last", "cls"])
def test_classifier_pooling_respects_padding(pooling, seeded):
    model = MambaClassifier(tiny(d_model=32), num_classes=3, pooling=pooling).eval()
    tok = NucleotideTokenizer()
    seqs = ["ACGTTGCA", "GATTACAGATTACA", "CCG"]
    batch = tok.batch_encode(seqs, add_special_tokens=True)
    batched = model(batch["input_ids"], batch["attention_mask"])
    assert batched.shape == (3, 3)
    for i, seq in enumerate(seqs):
        alone = model(torch.from_numpy(tok.encode(seq, add_special_tokens=True)).unsqueeze(0))
        torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-5, rtol=1e-5)


def test_last_pooling_picks_last_real_token(tiny_config, seeded):
    model = MambaLM(tiny_config)
    ids = _ids(2, 6)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    hidden, pooled = model.embed(ids, mask, pooling="last")
    assert torch.equal(pooled[0], hidden[0, 5]) and torch.equal(pooled[1], hidden[1, 2])
    _, mean = model.embed(ids, mask, pooling="mean")
    torch.testing.assert_close(mean[1], hidden[1, :3].mean(0))


def test_classifier_validates_arguments(tiny_config):
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        MambaClassifier(tiny_config, num_classes=0)
    with pytest.raises(ValueError, match="pooling must be one of"):
        MambaClassifier(tiny_config, num_classes=2, pooling="first")
    untied = MambaClassifier(MambaConfig(d_model=32, n_layer=1, tie_embeddings=False), num_classes=2)
    assert not untied.backbone.lm_head.weight.requires_grad
