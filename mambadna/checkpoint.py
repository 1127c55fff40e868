"""Saved model folders: config.json (config, tokenizer, version, model class) + model.safetensors (no pickle).

safetensors refuses tensors that share memory, so a weight tied to another (the LM head tied to the embedding)
is written once and recorded under "tied_weights"; loading rebuilds the model from its config, which re-ties it.

Model classes inherit `Pretrained` (their `save_pretrained` / `from_pretrained`), which also registers them by
name, so `load(directory)` returns whichever class a folder holds without this module importing the model.

Reading also accepts a transformers `MambaForCausalLM` folder (recognised from its config.json, converted by
mambadna/hf.py into a MambaLM) and, wherever a folder is expected, an `owner/name` Hub id (`hf.locate`).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from mambadna import hf
from mambadna.config import MambaConfig
from mambadna.files import write_bytes, write_text
from mambadna.tokenizer import tokenizer_from_name
from mambadna.version import __version__

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# model class name -> class, filled by `Pretrained.__init_subclass__` when MODEL_MODULE is imported (`load` imports
# it if nothing has)
MODEL_CLASSES: dict[str, type] = {}
MODEL_MODULE = "mambadna.model"


class Pretrained:
    """Mixin for model classes: `save_pretrained(dir)`, `cls.from_pretrained(dir)`, and registration for `load`."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        MODEL_CLASSES[cls.__name__] = cls

    def save_pretrained(self, directory) -> None:
        save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory, config: MambaConfig | None = None, map_location="cpu"):
        return load_pretrained(cls, directory, config=config, map_location=map_location)


def load(directory, map_location="cpu"):
    """The model saved in `directory`, as the class it was saved from (a MambaLM, a MambaClassifier, ...)."""
    directory = hf.locate(directory)
    kind = read_config(directory)["model_class"]
    if kind not in MODEL_CLASSES:
        # the classes register when their module loads; named, not imported at the top: model (rank 4) imports this
        importlib.import_module(MODEL_MODULE)
    if kind not in MODEL_CLASSES:
        raise ValueError(f"{directory} holds a {kind}, which this version of mambadna does not know "
                         f"(known: {', '.join(sorted(MODEL_CLASSES))})")
    return MODEL_CLASSES[kind].from_pretrained(directory, map_location=map_location)


def save_pretrained(model: torch.nn.Module, directory) -> None:
    """Write `model` (a MambaLM or MambaClassifier) to `directory`, creating it if needed."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, tied, first_key_at = {}, {}, {}
    for key, tensor in model.state_dict(keep_vars=False).items():
        ptr = (tensor.device, tensor.data_ptr())
        if ptr in first_key_at:
            tied[key] = first_key_at[ptr]
            continue
        first_key_at[ptr] = key
        tensors[key] = tensor.detach().cpu().contiguous()
    meta = {
        "model_class": type(model).__name__,
        "mambadna_version": __version__,
        "config": model.config.to_dict(),
        "tokenizer": tokenizer_from_name(model.config.tokenizer).to_dict(),
        "init_kwargs": model.init_kwargs(),
        "tied_weights": tied,
    }
    # weights first, each file renamed into place whole: a crash leaves the old pair or a new weights file beside
    # the old config, never a truncated file under either name
    write_bytes(directory / WEIGHTS_NAME,
                safetensors_bytes(tensors, metadata={"format": "pt", "mambadna_version": __version__}))
    write_text(directory / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")


def read_config(directory) -> dict:
    """The parsed config.json of a checkpoint directory (a transformers Mamba folder's, converted)."""
    directory = hf.locate(directory)
    path = directory / CONFIG_NAME
    if directory.is_file():
        if directory.suffix == ".ckpt":
            raise FileNotFoundError(f"{directory} is a Lightning training checkpoint (for --resume-from), not a saved "
                                    "model; give the run's model/ folder, written when the run finishes")
        raise FileNotFoundError(f"{directory} is a file; give a saved model folder (config.json + model.safetensors)")
    if not directory.exists():
        raise FileNotFoundError(f"no such model folder: {directory} (a saved model is a folder holding config.json "
                                "and model.safetensors)")
    if not path.is_file():
        inner = Path(directory) / "model" / CONFIG_NAME
        hint = f" (it is a run folder: its model is {inner.parent})" if inner.is_file() else ""
        raise FileNotFoundError(f"no {CONFIG_NAME} in {directory}: not a mambadna or transformers Mamba model "
                                f"folder{hint}")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the file is damaged or not a mambadna config") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} is not a mambadna config (expected a JSON object)")
    if hf.is_transformers_config(meta):
        return hf.read_transformers_config(directory, meta)
    missing = [k for k in ("model_class", "config", "tokenizer") if k not in meta]
    if missing and "model_type" in meta:
        raise ValueError(f"{directory} holds a transformers {meta['model_type']!r} model, not a Mamba model; "
                         "mambadna reads mambadna folders and transformers Mamba folders")
    if missing:
        raise ValueError(f"{path} lacks required keys {missing}")
    return meta


def read_weights(path: Path, map_location="cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a damaged, truncated or non-safetensors file is a one-line ValueError."""
    try:
        return load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError) as err:
        size = path.stat().st_size if path.is_file() else 0
        raise ValueError(f"{path} is not a readable safetensors file ({err}; {size} bytes): it is truncated, damaged "
                         "or in another format (a torch.save pickle?); save the model again with save_pretrained"
                         ) from None


def load_pretrained(cls, directory, config: MambaConfig | None = None, map_location="cpu"):
    """Build `cls` from `directory`. If `config` is given it must equal the saved one; every mismatch (class,
    config keys, tokenizer, weight names, shapes) raises ValueError naming exactly what differs."""
    directory = hf.locate(directory)
    meta = read_config(directory)
    if meta["model_class"] != cls.__name__:
        raise ValueError(
            f"{directory} holds a {meta['model_class']}, not a {cls.__name__}; load it with "
            f"{meta['model_class']}.from_pretrained"
        )
    saved = MambaConfig.from_dict(meta["config"])
    if config is not None and config != saved:
        diffs = {k: (v, getattr(config, k)) for k, v in saved.to_dict().items() if getattr(config, k) != v}
        listed = ", ".join(f"{k}: saved {a!r} vs given {b!r}" for k, (a, b) in diffs.items())
        raise ValueError(f"config mismatch with {directory / CONFIG_NAME}: {listed}")
    tok = meta["tokenizer"]
    if tok.get("name") != saved.tokenizer:
        raise ValueError(
            f"{directory / CONFIG_NAME}: tokenizer {tok.get('name')!r} but config says {saved.tokenizer!r}"
        )
    if tokenizer_from_name(**tok).vocab_size > saved.vocab_size:
        raise ValueError(f"{directory}: tokenizer vocabulary exceeds config vocab_size {saved.vocab_size}")

    model = cls(saved, **meta.get("init_kwargs", {}))
    weights = directory / WEIGHTS_NAME
    if meta.get("format") == hf.FORMAT:  # transformers' weight names (and possibly shards)
        state = hf.state_dict_from_transformers(hf.read_weights(directory, map_location), saved.tie_embeddings,
                                                source=directory)
    elif not weights.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {directory}")
    else:
        state = read_weights(weights, map_location)
    expected = model.state_dict()
    tied = meta.get("tied_weights", {})
    missing = sorted(k for k in expected if k not in state and k not in tied)
    unexpected = sorted(k for k in state if k not in expected)
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(state)
        if k in expected and state[k].shape != expected[k].shape
    ]
    bad_ties = sorted(
        k for k, src in tied.items()
        if k not in expected or src not in expected or expected[k].data_ptr() != expected[src].data_ptr()
    )
    problems = []
    if missing:
        problems.append(f"missing weights {missing}")
    if unexpected:
        problems.append(f"unexpected weights {unexpected}")
    if shapes:
        problems.append("shape mismatches " + "; ".join(shapes))
    if bad_ties:
        problems.append(f"weights saved as tied but not tied in this model {bad_ties}")
    if problems:
        raise ValueError(f"{weights} does not match {cls.__name__}({saved}): " + "; ".join(problems))
    model.load_state_dict(state, strict=False)
    return model.to(map_location)
