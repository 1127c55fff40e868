import math

import torch

from mambadna.config import tiny
from mambadna.model import MambaLM
from mambadna.tasks.optim import build_optimizer, param_groups, warmup_cosine
from mambadna.run_config import OptimSpec


def test_weight_decay_only_on_matrices():
    model = MambaLM(tiny(d_model=16, d_state=4))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    plain = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "layers.0.mixer.A_log" in plain and "layers.0.mixer.D" in plain  # 2-D but flagged / 1-D
    assert "layers.0.norm.weight" in plain and "layers.0.mixer.dt_proj.bias" in plain
    assert "layers.0.mixer.in_proj.weight" in decayed and "embedding.weight" in decayed
    assert all(p.ndim >= 2 for p in decay["params"])
    assert len(decayed) + len(plain) == len(list(model.parameters()))


def test_warmup_then_cosine():
    f = warmup_cosine(total_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert f(0) < f(5) < f(9) <= 1.0
    assert f(10) == 1.0
    assert math.isclose(f(55), 0.1 + 0.9 * 0.5, rel_tol=1e-6)
    assert math.isclose(f(100), 0.1) and f(99) > 0.1


def test_build_optimizer_uses_paper_betas():
    model = MambaLM(tiny(d_model=16, d_state=4))
    out = build_optimizer(model, OptimSpec(), total_steps=50)
    opt = out["optimizer"]
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.95)
    assert out["lr_scheduler"]["interval"] == "step"


def test_build_optimizer_multiplies_the_schedule_by_lr_scale():
    model = MambaLM(tiny(d_model=16, d_state=4))
    spec = OptimSpec(warmup_steps=0)
    out = build_optimizer(model, spec, total_steps=10, lr_scale=lambda step: 0.5 if step >= 3 else 1.0)
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    plain = warmup_cosine(10, 0, spec.min_lr_ratio)
    seen = []
    for step in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    want = [spec.lr * plain(s) * (0.5 if s >= 3 else 1.0) for s in range(6)]
    assert all(math.isclose(a, b) for a, b in zip(seen, want)), (seen, want)
