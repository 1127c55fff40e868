import pytest
import torch

from mambadna.config import tiny
from mambadna.inference import prefill
from mambadna.model import LayerState, MambaLM
from mambadna.tokenizer import NucleotideTokenizer

pytestmark = pytest.mark.usefixtures("single_thread")


def _model(**overrides):
    torch.manual_seed(0)
    return MambaLM(tiny(d_model=32, d_state=8, **overrides)).eval()


def _real_ids(real_dna, l):
    return torch.from_numpy(NucleotideTokenizer().encode(real_dna[:l])).unsqueeze(0)  # (1, l)


def test_zero_states_shapes_and_dtypes():
    model = _model()
    states = model.zero_states(3)
    assert len(states) == 2 and all(isinstance(s, LayerState) for s in states)
    assert states[0].conv.shape == (3, 64, 4) and states[0].conv.dtype == torch.float32
    assert states[0].ssm.shape == (3, 64, 8) and states[0].ssm.dtype == torch.float32
    bf16 = model.zero_states(1, dtype=torch.bfloat16)[0]
    assert bf16.ssm.dtype == torch.float32 and bf16.conv.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        model.zero_states(0)


@pytest.mark.parametrize(
    "overrides", [{}, {"d_conv": 1}, {"residual_in_fp32": False, "conv_bias": False, "bias": True}]
)
def test_step_by_step_logits_equal_full_forward(real_dna, overrides):
    model = _model(**overrides)
    ids = torch.cat([_real_ids(real_dna, 60), _real_ids(real_dna[100:], 60)])  # (2, 60)
    with torch.no_grad():
        full = model(ids)  # (2, 60, V)
    states = model.zero_states(2)
    stepped = torch.stack([model.step(ids[:, t], states) for t in range(ids.shape[1])], dim=1)
    assert (stepped - full).abs().max().item() < 1e-4


def test_prefill_in_chunks_then_step_equals_full_forward(real_dna):
    model = _model()
    ids = _real_ids(real_dna, 50)
    with torch.no_grad():
        full = model(ids)
    states = model.zero_states(1)
    a = prefill(model, ids[:, :3], states)  # shorter than d_conv
    b = prefill(model, ids[:, 3:40], states)
    c = torch.stack([model.step(ids[:, t], states) for t in range(40, 50)], dim=1)
    assert (torch.cat([a, b, c], 1) - full).abs().max().item() < 1e-4


def test_step_validates_inputs():
    model = _model()
    states = model.zero_states(2)
    with pytest.raises(ValueError, match=r"must be \(b,\)"):
        model.step(torch.tensor([[5, 6]]), states)
    with pytest.raises(ValueError, match="states hold batch size 2, got 3"):
        model.step(torch.tensor([5, 6, 7]), states)
    with pytest.raises(ValueError, match="LayerState"):
        model.step(torch.tensor([5, 6]), {})


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


@pytest.mark.parametrize("overrides", [{}, {"conv_bias": False, "d_conv": 3}])
def test_fused_triton_step_equals_the_eager_step(real_dna, overrides):
    """The two fused step kernels (run here in Triton's interpreter) against the eager step, their reference."""
    pytest.importorskip("triton")
    ids = torch.cat([_real_ids(real_dna, 12), _real_ids(real_dna[50:], 12)])  # (2, 12)
    eager, fused = _model(**overrides), _model(**overrides)
    fused.fused_step = True
    eager.fused_step = False
    s_eager, s_fused = eager.zero_states(2), fused.zero_states(2)
    for t in range(ids.shape[1]):
        want, got = eager.step(ids[:, t], s_eager), fused.step(ids[:, t], s_fused)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(s_fused, s_eager):
        torch.testing.assert_close(a.conv, b.conv, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.ssm, b.ssm, rtol=1e-5, atol=1e-6)
    assert s_eager[0].ssm.abs().sum() > 0


def test_block_decoder_equals_step_by_step_sampling_and_is_reproducible():
    """The decoder runs blocks of steps from static buffers (what a CUDA graph replays); its greedy tokens follow the
    step-by-step argmax, and sampled tokens are a function of the generator's seed."""
    from mambadna.inference import Decoder

    model = _model()
    prompt = torch.tensor([[5, 6, 7, 8, 5, 6]])
    states = model.zero_states(1)
    logits = prefill(model, prompt, states)[:, -1]
    first = logits[:, 5:10].argmax(-1) + 5
    greedy = Decoder(model, 1, temperature=0, block=4, graph=False).decode(states, first, 10)
    assert greedy.shape == (1, 10)
    state_ref = model.zero_states(1)
    prefill(model, prompt, state_ref)
    token, want = first, []
    for _ in range(10):
        step_logits = model.step(token, state_ref)
        token = step_logits[:, 5:10].argmax(-1) + 5
        want.append(token)
    assert torch.equal(greedy, torch.stack(want, 1))
    runs = [Decoder(model, 1, temperature=1.0, block=3, graph=False).decode(
        states, first, 7, torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
