import pytest
import torch

from mambadna.config import tiny
from mambadna.inference import InferenceCache, prefill
from mambadna.model import MambaLM
from mambadna.tokenizer import NucleotideTokenizer

pytestmark = pytest.mark.usefixtures("single_thread")


def _model(**overrides):
    torch.manual_seed(0)
    return MambaLM(tiny(d_model=32, d_state=8, **overrides)).eval()


def _real_ids(real_dna, l):
    return torch.from_numpy(NucleotideTokenizer().encode(real_dna[:l])).unsqueeze(0)  # (1, l)


def test_allocate_cache_shapes_and_dtypes():
    model = _model()
    cache = model.allocate_cache(3)
    assert len(cache.conv_states) == len(cache.ssm_states) == 2
    assert cache.conv_states[0].shape == (3, 64, 4) and cache.conv_states[0].dtype == torch.float32
    assert cache.ssm_states[0].shape == (3, 64, 8) and cache.ssm_states[0].dtype == torch.float32
    assert model.allocate_cache(1, dtype=torch.bfloat16).ssm_states[0].dtype == torch.float32
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        model.allocate_cache(0)


@pytest.mark.parametrize(
    "overrides", [{}, {"d_conv": 1}, {"residual_in_fp32": False, "conv_bias": False, "bias": True}]
)
def test_step_by_step_logits_equal_full_forward(real_dna, overrides):
    model = _model(**overrides)
    ids = torch.cat([_real_ids(real_dna, 60), _real_ids(real_dna[100:], 60)])  # (2, 60)
    with torch.no_grad():
        full = model(ids)  # (2, 60, V)
    cache = model.allocate_cache(2)
    stepped = torch.stack([model.step(ids[:, t], cache) for t in range(ids.shape[1])], dim=1)
    assert cache.seqlen_offset == 60
    assert (stepped - full).abs().max().item() < 1e-4


def test_prefill_in_chunks_then_step_equals_full_forward(real_dna):
    model = _model()
    ids = _real_ids(real_dna, 50)
    with torch.no_grad():
        full = model(ids)
    cache = model.allocate_cache(1)
    a = prefill(model, ids[:, :3], cache)  # shorter than d_conv
    b = prefill(model, ids[:, 3:40], cache)
    c = torch.stack([model.step(ids[:, t], cache) for t in range(40, 50)], dim=1)
    assert (torch.cat([a, b, c], 1) - full).abs().max().item() < 1e-4


def test_step_validates_inputs():
    model = _model()
    cache = model.allocate_cache(2)
    with pytest.raises(ValueError, match=r"must be \(b,\)"):
        model.step(torch.tensor([[5, 6]]), cache)
    with pytest.raises(ValueError, match="allocated for batch size 2, got 3"):
        model.step(torch.tensor([5, 6, 7]), cache)
    with pytest.raises(ValueError, match="InferenceCache"):
        model.step(torch.tensor([5, 6]), {})
    assert isinstance(cache, InferenceCache)


def test_generate_never_samples_special_tokens_and_is_reproducible():
    model = _model()
    with torch.no_grad():
        # Make special and vocab-padding ids overwhelmingly likely, so only the mask can keep them out.
        model.embedding.weight[[0, 1, 2, 3, 4, 10, 11, 15]] *= 50
    prompt = torch.tensor([[1, 5, 6, 7], [1, 8, 8, 8]])
    g = torch.Generator().manual_seed(1)
    out = model.generate(prompt, 40, temperature=1.5, generator=g)
    assert out.shape == (2, 44) and torch.equal(out[:, :4], prompt)
    assert out[:, 4:].min() >= 5 and out[:, 4:].max() <= 9
    again = model.generate(prompt, 40, temperature=1.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


def test_generate_greedy_follows_the_forward_argmax():
    model = _model()
    prompt = torch.tensor([[5, 6, 7, 8, 5]])
    out = model.generate(prompt, 6, temperature=0)
    with torch.no_grad():
        logits = model(out)[:, :-1]
    logits[..., :5] = float("-inf")
    logits[..., 10:] = float("-inf")
    assert torch.equal(logits.argmax(-1)[:, 4:], out[:, 5:])


def test_generate_top_k_one_is_greedy_and_arguments_are_checked():
    model = _model()
    prompt = torch.tensor([[5, 6, 7]])
    assert torch.equal(model.generate(prompt, 5, top_k=1), model.generate(prompt, 5, temperature=0))
    assert model.generate(prompt, 0).shape == (1, 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(prompt, -1)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt, 1, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(prompt, 1, top_k=0)
