import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from mambadna import __version__
from mambadna.config import tiny
from mambadna.model import MambaClassifier, MambaLM

pytestmark = pytest.mark.usefixtures("single_thread")


def _ids():
    return torch.tensor([[1, 5, 6, 7, 8, 9, 5, 5, 2]])


def test_lm_round_trip_gives_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = MambaLM(tiny(d_model=32)).eval()
    model.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["model_class"] == "MambaLM" and meta["mambadna_version"] == __version__
    assert meta["tokenizer"]["name"] == "nucleotide" and meta["config"]["d_model"] == 32
    assert meta["tied_weights"] == {"lm_head.weight": "embedding.weight"}
    assert "lm_head.weight" not in load_file(str(tmp_path / "model.safetensors"))
    loaded = MambaLM.from_pretrained(tmp_path).eval()
    assert loaded.lm_head.weight is loaded.embedding.weight
    with torch.no_grad():
        assert torch.equal(model(_ids()), loaded(_ids()))


def test_kernel_settings_survive_a_round_trip(tmp_path):
    MambaLM(tiny(d_model=32, scan_kernel="v2", norm_backend="auto")).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["config"]
    assert (saved["scan_kernel"], saved["norm_backend"]) == ("v2", "auto")
    loaded = MambaLM.from_pretrained(tmp_path)
    assert (loaded.config.scan_kernel, loaded.config.norm_backend, loaded.norm_f.backend) == ("v2", "auto", "auto")


def test_untied_lm_round_trip(tmp_path):
    torch.manual_seed(0)
    model = MambaLM(tiny(d_model=32, tie_embeddings=False))
    model.save_pretrained(tmp_path)
    loaded = MambaLM.from_pretrained(tmp_path)
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    assert not torch.equal(loaded.lm_head.weight, loaded.embedding.weight)


def test_config_mismatch_names_the_keys(tmp_path):
    MambaLM(tiny(d_model=32)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"d_model: saved 32 vs given 64.*n_layer: saved 2 vs given 3"):
        MambaLM.from_pretrained(tmp_path, config=tiny(n_layer=3))


def test_shape_mismatch_and_missing_weights_are_named(tmp_path):
    MambaLM(tiny(d_model=32)).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(str(weights))
    state["layers.0.mixer.D"] = torch.ones(7)
    del state["norm_f.weight"]
    save_file(state, str(weights))
    with pytest.raises(ValueError) as err:
        MambaLM.from_pretrained(tmp_path)
    message = str(err.value)
    assert "missing weights ['norm_f.weight']" in message
    assert "layers.0.mixer.D: file (7,) vs model (64,)" in message


def test_class_mismatch_and_missing_directory(tmp_path):
    MambaClassifier(tiny(d_model=32), num_classes=2).save_pretrained(tmp_path / "clf")
    with pytest.raises(ValueError, match="holds a MambaClassifier, not a MambaLM"):
        MambaLM.from_pretrained(tmp_path / "clf")
    with pytest.raises(FileNotFoundError, match="config.json"):
        MambaLM.from_pretrained(tmp_path / "nowhere")


def test_load_alone_finds_the_class_in_a_fresh_interpreter(tmp_path):
    """`checkpoint.load` as the docs show it, with nothing else of mambadna imported: the classes register when
    mambadna.model loads, which load imports itself."""
    MambaClassifier(tiny(d_model=32), num_classes=3).save_pretrained(tmp_path / "clf")
    code = ("import sys; import mambadna.checkpoint as c; assert 'mambadna.model' not in sys.modules; "
            f"m = c.load({str(tmp_path / 'clf')!r}); print(type(m).__name__, m.num_classes)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["MambaClassifier", "3"]


def test_classifier_round_trip_and_backbone_loading(tmp_path):
    torch.manual_seed(0)
    lm = MambaLM(tiny(d_model=32))
    lm.save_pretrained(tmp_path / "lm")
    clf = MambaClassifier.from_pretrained_backbone(tmp_path / "lm", num_classes=4, pooling="mean")
    assert (clf.num_classes, clf.pooling) == (4, "mean")
    for key, value in lm.state_dict().items():
        assert torch.equal(clf.backbone.state_dict()[key], value), key
    clf.save_pretrained(tmp_path / "clf")
    loaded = MambaClassifier.from_pretrained(tmp_path / "clf")
    assert (loaded.num_classes, loaded.pooling) == (4, "mean")
    with torch.no_grad():
        assert torch.equal(clf(_ids()), loaded(_ids()))
