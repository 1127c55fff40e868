import json

import pytest

from mambadna import run_config as rc


def test_set_converts_types_and_nested_keys():
    cfg = rc.apply_overrides(rc.PretrainConfig(), [
        "train.max_steps=12", "optim.lr=3e-4", "train.compile=true", "data.train_windows=none",
        "optim.betas=[0.8, 0.9]", "out_dir=x", "train.devices=0,1"])
    assert cfg.train.max_steps == 12 and isinstance(cfg.train.max_steps, int)
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.train.compile is True
    assert cfg.data.train_windows is None and cfg.optim.betas == [0.8, 0.9] and cfg.out_dir == "x"
    assert cfg.runtime.lightning_devices() == [0, 1]  # train.devices moved to runtime.devices; the old key works


@pytest.mark.parametrize("item, message", [
    ("train.max_step=3", "valid keys: max_steps, accumulate_grad_batches"),
    ("nope=1", "valid keys: out_dir, resume, resume_from, overwrite, model, data"),
    ("train=3", "is a section"),
    ("train.max_steps=abc", "not a valid int"),
    ("train.max_steps=0", "train.max_steps must be a positive number"),
    ("train.precision=fp8", "runtime.precision must be one of"),
    ("max_steps", "key=value"),
])
def test_bad_overrides_raise_clear_errors(item, message):
    with pytest.raises(ValueError, match=message):
        rc.apply_overrides(rc.PretrainConfig(), [item])


def test_recipe_toml_and_json(tmp_path):
    toml = tmp_path / "r.toml"
    toml.write_text('out_dir = "o"\n[train]\nmax_steps = 7\nprecision = "bf16-mixed"\n[data]\nwindow_bp = 2048\n')
    cfg = rc.load_recipe(rc.PretrainConfig(), toml)
    assert (cfg.train.max_steps, cfg.runtime.precision, cfg.data.window_bp, cfg.out_dir) == (7, "bf16-mixed", 2048, "o")
    assert cfg.optim.lr == rc.OptimSpec().lr  # untouched settings keep their defaults
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"max_stepz": 3}}))
    with pytest.raises(ValueError, match="recipe .*bad.json: unknown setting 'train.max_stepz'"):
        rc.load_recipe(rc.PretrainConfig(), bad)


def test_shipped_recipes_load():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "experiments" / "recipes"
    recipes = sorted(folder.glob("*.toml"))
    assert recipes
    for path in recipes:
        base = rc.FinetuneConfig() if "finetune" in path.name else rc.PretrainConfig()
        rc.load_recipe(base, path)


def test_save_config_roundtrip(tmp_path):
    from mambadna.commands.demo import demo_finetune

    cfg = demo_finetune("out", "pre/model")
    rc.save_config(cfg, tmp_path / "c.json")
    data = json.loads((tmp_path / "c.json").read_text())
    assert data.pop("kind") == "FinetuneConfig"
    assert rc.from_dict(rc.FinetuneConfig, data) == cfg


def test_a_run_config_saved_before_the_runtime_section_still_loads(tmp_path):
    """run_config.json files written when the runtime settings were train.* (and with --resume) load as they were."""
    cfg = rc.PretrainConfig(runtime=rc.RuntimeSpec(precision="bf16-mixed", devices="2"), resume=True)
    rc.save_config(cfg, tmp_path / "new.json")
    data = json.loads((tmp_path / "new.json").read_text())
    assert data["resume"] is False  # a setting of one invocation is not saved with the run
    runtime = data.pop("runtime")
    data["train"].update(runtime)
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert rc.load_config(tmp_path / "old.json") == rc.PretrainConfig(runtime=cfg.runtime)


def test_initial_memory_must_be_a_number_of_bases():
    assert rc.TrainSpec().init_memory_bp is None and rc.TrainSpec(init_memory_bp=0).init_memory_bp == 0
    with pytest.raises(ValueError, match="train.init_memory_bp must be a non-negative number"):
        rc.TrainSpec(init_memory_bp=-1)
