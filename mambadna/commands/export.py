"""`mambadna export`: a saved model in transformers' Mamba format (or a transformers Mamba in mambadna's).

The transformers folder loads with `transformers.MambaForCausalLM.from_pretrained(folder)` and
`transformers.AutoTokenizer.from_pretrained(folder)`, no custom code: mambadna's MambaLM is the same network under
other weight names (mambadna/hf.py). Written files: config.json, model.safetensors, tokenizer.json,
tokenizer_config.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from mambadna import hf
from mambadna.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load, read_config
from mambadna.commands.configs import EXPORT_FORMATS, ExportConfig
from mambadna.model import MambaClassifier, MambaLM
from mambadna.version import __version__

def export_model(checkpoint, out_dir, fmt: str = "transformers", backbone: bool = False) -> dict:
    """Write the model in `checkpoint` (a folder of either format, or a Hub id) to `out_dir` as `fmt`;
    -> {what: path} of the files written. `backbone` exports a classifier's language model."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {EXPORT_FORMATS}, got {fmt!r}")
    source = hf.locate(checkpoint)
    out_dir = Path(out_dir)
    if out_dir.exists() and out_dir.resolve() == source.resolve():
        raise ValueError(f"the output folder {out_dir} is the model folder itself; export to another folder")
    try:
        model, meta = load(source), read_config(source)
    except FileNotFoundError as err:
        raise ValueError(str(err)) from None
    if isinstance(model, MambaClassifier):
        if not backbone:
            raise ValueError(f"{checkpoint} holds a MambaClassifier, and transformers' Mamba has no sequence-"
                             "classification class; export its language model with --backbone")
        model = model.backbone
    if not isinstance(model, MambaLM):
        raise ValueError(f"{checkpoint} holds a {type(model).__name__}; export writes MambaLM models")
    if fmt == "mambadna":
        model.save_pretrained(out_dir)
        return {"config": str(out_dir / CONFIG_NAME), "weights": str(out_dir / WEIGHTS_NAME)}
    return write_transformers(model, out_dir, meta["tokenizer"])


def run(cfg: ExportConfig) -> dict:
    """The `mambadna export` command: -> {what: path} of the files written."""
    return export_model(cfg.checkpoint, cfg.out, fmt=cfg.format, backbone=cfg.backbone)


def write_transformers(model: MambaLM, out_dir, tokenizer: dict | None = None) -> dict:
    """`model` as a transformers MambaForCausalLM folder with its tokenizer; ValueError (before anything is
    written) for settings transformers' Mamba cannot express."""
    config = hf.config_to_transformers(model.config)
    tokenizer = tokenizer or {"name": model.config.tokenizer}
    texts = hf.tokenizer_files(**tokenizer)
    state = hf.state_dict_to_transformers(model.state_dict(), tied=model.config.tie_embeddings)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"config": out_dir / CONFIG_NAME, "weights": out_dir / "model.safetensors"}
    files["config"].write_text(json.dumps({**config, "mambadna_version": __version__}, indent=2) + "\n")
    # transformers refuses safetensors whose metadata does not say which framework wrote them
    save_file(tensors, str(files["weights"]), metadata={"format": "pt"})
    for name, text in texts.items():
        files[Path(name).stem] = out_dir / name
        files[Path(name).stem].write_text(text)
    return {k: str(v) for k, v in files.items()}
