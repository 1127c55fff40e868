import torch

from mambadna.config import tiny
from mambadna.model import MambaLM


def test_activation_checkpointing_same_grads_same_keys(real_dna):
    from mambadna.tokenizer import NucleotideTokenizer

    torch.manual_seed(0)
    plain = MambaLM(tiny(d_model=16, d_state=4))
    ckpt = MambaLM(tiny(d_model=16, d_state=4))
    ckpt.load_state_dict(plain.state_dict())
    ckpt.activation_checkpointing = True
    assert list(ckpt.state_dict()) == list(plain.state_dict())
    ids = torch.as_tensor(NucleotideTokenizer().encode(real_dna[:96])).view(2, 48)
    for model in (plain, ckpt):
        model(ids).float().logsumexp(-1).mean().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    with torch.no_grad():  # recurrent paths bypass the checkpoint wrapper
        out = ckpt.generate(ids[:1, :8], 4, temperature=0)
    assert out.shape == (1, 12)
