"""`mambadna export`: a saved model in transformers' Mamba format (or a transformers Mamba in mambadna's).

The transformers folder loads with `transformers.MambaForCausalLM.from_pretrained(folder)` and
`transformers.AutoTokenizer.from_pretrained(folder)`, no custom code: mambadna's MambaLM is the same network under
other weight names (mambadna/hf.py). Written files: config.json, model.safetensors, tokenizer.json,
tokenizer_config.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save as safetensors_bytes

from mambadna import hf
from mambadna.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load, read_config
from mambadna.commands.configs import EXPORT_FORMATS, ExportConfig
from mambadna.files import lock_folder, release_folder, write_bytes, write_text
from mambadna.model import MambaClassifier, MambaLM
from mambadna.version import __version__

# the files a model folder of either format holds (training.json: what a run adds to its model/)
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME, "tokenizer.json", "tokenizer_config.json", "training.json")


def _check_out(out_dir: Path, overwrite: bool) -> list[Path]:
    """The model files already in `out_dir` (replaced only with `overwrite`)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"the output {out_dir} is a file; give a folder to export into")
    existing = [out_dir / name for name in MODEL_FILES if (out_dir / name).exists()]
    if existing and not overwrite:
        raise ValueError(f"{out_dir} already holds a model ({', '.join(p.name for p in existing)}); choose another "
                         "output folder or add --overwrite to replace it")
    return existing


def export_model(checkpoint, out_dir, fmt: str = "transformers", backbone: bool = False,
                 overwrite: bool = False) -> dict:
    """Write the model in `checkpoint` (a folder of either format, or a Hub id) to `out_dir` as `fmt`;
    -> {what: path} of the files written. `backbone` exports a classifier's language model. A folder that already
    holds a model is replaced only with `overwrite` (its model files all go, so no file of the old one stays
    beside the new); each file is written under a temporary name and renamed into place."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {EXPORT_FORMATS}, got {fmt!r}")
    source = hf.locate(checkpoint)
    out_dir = Path(out_dir)
    if out_dir.exists() and out_dir.resolve() == source.resolve():
        raise ValueError(f"the output folder {out_dir} is the model folder itself; export to another folder")
    _check_out(out_dir, overwrite)
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
    lock_folder(out_dir, "export", what="output folder")
    try:
        written = _export(model, meta, out_dir, fmt)
        for stale in _check_out(out_dir, overwrite=True):  # an earlier model's files the new one does not have
            if str(stale) not in written.values():
                stale.unlink()
        return written
    finally:
        release_folder(out_dir)


def _export(model: MambaLM, meta: dict, out_dir: Path, fmt: str) -> dict:
    if fmt == "mambadna":
        model.save_pretrained(out_dir)
        return {"config": str(out_dir / CONFIG_NAME), "weights": str(out_dir / WEIGHTS_NAME)}
    return write_transformers(model, out_dir, meta["tokenizer"])


def run(cfg: ExportConfig) -> dict:
    """The `mambadna export` command: -> {what: path} of the files written."""
    return export_model(cfg.checkpoint, cfg.out, fmt=cfg.format, backbone=cfg.backbone, overwrite=cfg.overwrite)


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
    files = {"config": out_dir / CONFIG_NAME, "weights": out_dir / WEIGHTS_NAME}
    # transformers refuses safetensors whose metadata does not say which framework wrote them
    write_bytes(files["weights"], safetensors_bytes(tensors, metadata={"format": "pt"}))
    write_text(files["config"], json.dumps({**config, "mambadna_version": __version__}, indent=2) + "\n")
    for name, text in texts.items():
        files[Path(name).stem] = out_dir / name
        write_text(files[Path(name).stem], text)
    return {k: str(v) for k, v in files.items()}
