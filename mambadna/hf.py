"""transformers' Mamba format, both ways, without the model: config.json <-> MambaConfig, weight names, tokenizer
files, and Hub ids.

mambadna's MambaLM computes what transformers' built-in `MambaForCausalLM` computes, parameter for parameter (same
shapes, same softplus(Δ + dt_proj.bias), same RMSNorm and residual order), so a model moves between the two by
renaming weights and translating the config: no custom code on either side. These are plain functions over dicts
and files because checkpoint.py calls them and the model imports checkpoint.py (no import cycle). Nothing here
imports transformers: only `huggingface_hub` (for Hub ids) and `tokenizers` (to write tokenizer.json), each when
first needed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import torch

from mambadna.config import MambaConfig
from mambadna.tokenizer import NUM_SPECIAL, SPECIAL_TOKENS, ByteTokenizer, NucleotideTokenizer, tokenizer_from_name

MODEL_TYPE = "mamba"
ARCHITECTURE = "MambaForCausalLM"
# read_config marks a converted transformers folder with this, so load_pretrained converts its weights too
FORMAT = "transformers"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SAFETENSORS_INDEX = "model.safetensors.index.json"

# MambaConfig field -> transformers MambaConfig key: the same quantity under two names.
FIELDS = {
    "d_model": "hidden_size", "n_layer": "num_hidden_layers", "vocab_size": "vocab_size", "d_state": "state_size",
    "d_conv": "conv_kernel", "expand": "expand", "dt_rank": "time_step_rank", "dt_min": "time_step_min",
    "dt_max": "time_step_max", "dt_init_floor": "time_step_floor", "conv_bias": "use_conv_bias", "bias": "use_bias",
    "tie_embeddings": "tie_word_embeddings", "norm_eps": "layer_norm_epsilon", "residual_in_fp32": "residual_in_fp32",
}
# Fields that describe how mambadna checks or runs a model, not what it computes; the tokenizer goes into its own
# files. Any other MambaConfig field (one added later) has no transformers equivalent: export refuses it unless it
# holds its default.
LOCAL_FIELDS = ("pad_vocab_multiple", "scan_backend", "scan_kernel", "conv_backend", "norm_backend", "tokenizer")

# mambadna weight-name prefix -> transformers prefix (everything under a layer keeps its name: norm, mixer.in_proj,
# mixer.conv1d, mixer.x_proj, mixer.dt_proj, mixer.A_log, mixer.D, mixer.out_proj).
_PREFIXES = (("embedding.", "backbone.embeddings."), ("layers.", "backbone.layers."),
             ("norm_f.", "backbone.norm_f."), ("lm_head.", "lm_head."))
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
# what a model folder on the Hub needs, either format; never pickles (*.bin), which can run code when loaded
HUB_FILES = ["config.json", "*.safetensors", SAFETENSORS_INDEX, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE,
             "special_tokens_map.json", "training.json"]


# ---- config ----

def is_transformers_config(meta: dict) -> bool:
    """True for a transformers Mamba config.json (mambadna's own carry "model_class")."""
    return meta.get("model_type") == MODEL_TYPE and "model_class" not in meta


def config_to_transformers(config: MambaConfig) -> dict:
    """The config.json of a `MambaForCausalLM` computing what `MambaLM(config)` computes; ValueError for a config
    transformers' Mamba cannot express."""
    defaults = {f.name: f.default for f in dataclasses.fields(MambaConfig)}
    extra = [f"{name}={value!r}" for name, value in config.to_dict().items()
             if name not in FIELDS and name not in LOCAL_FIELDS and value != defaults.get(name)]
    if extra:
        raise ValueError(f"transformers' Mamba has no equivalent of MambaConfig {', '.join(extra)}; a model with "
                         "these settings can only be saved in mambadna's format")
    out = {hf_key: getattr(config, name) for name, hf_key in FIELDS.items()}
    out["time_step_rank"] = config.dt_rank_resolved  # transformers resolves "auto" the same way; be explicit
    tokenizer = tokenizer_from_name(config.tokenizer)
    return {
        "architectures": [ARCHITECTURE], "model_type": MODEL_TYPE, **out,
        "intermediate_size": config.d_inner, "hidden_act": "silu",
        "pad_token_id": tokenizer.pad_id, "bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id,
        # Initialisation only (what a fresh transformers model would draw). rescale_prenorm_residual would describe
        # mambadna's init, but transformers 5.24 applies that 1/sqrt(n_layer) rescale in place to *loaded* out_proj
        # weights as well, which changes the logits, so it stays off.
        "time_step_scale": 1.0, "time_step_init_scheme": "random", "rescale_prenorm_residual": False,
        "initializer_range": 0.02, "use_cache": True, "dtype": "float32",
    }


def config_from_transformers(hf: dict, tokenizer: str, source="config.json") -> MambaConfig:
    """The MambaConfig of a transformers Mamba config.json (`tokenizer`: the mambadna tokenizer name it uses)."""
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"{source}: hidden_act {act!r}; mambadna's Mamba uses silu only")
    defaults = {"hidden_size": None, "num_hidden_layers": None, "vocab_size": 50280, "state_size": 16,
                "conv_kernel": 4, "expand": 2, "time_step_rank": "auto", "time_step_min": 1e-3, "time_step_max": 1e-1,
                "time_step_floor": 1e-4, "use_conv_bias": True, "use_bias": False, "tie_word_embeddings": True,
                "layer_norm_epsilon": 1e-5, "residual_in_fp32": True}  # transformers' own defaults
    values = {name: hf.get(hf_key, defaults[hf_key]) for name, hf_key in FIELDS.items()}
    missing = [FIELDS[k] for k in ("d_model", "n_layer") if values[k] is None]
    if missing:
        raise ValueError(f"{source}: a Mamba config.json needs {missing}")
    if isinstance(values["d_model"], int) and values["dt_rank"] == math.ceil(values["d_model"] / 16):
        values["dt_rank"] = "auto"  # what export writes for "auto", so a round trip keeps the config equal
    vocab = values["vocab_size"]
    try:
        return MambaConfig(**values, tokenizer=tokenizer, pad_vocab_multiple=8 if vocab % 8 == 0 else 1)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


# ---- weights ----

def state_dict_to_transformers(state: dict, tied: bool) -> dict:
    """mambadna weight names -> MambaForCausalLM's. A tied LM head is left out, as transformers saves it."""
    out = {}
    for key, tensor in state.items():
        if tied and key == "lm_head.weight":
            continue
        prefix = next((p for p in _PREFIXES if key.startswith(p[0])), None)
        if prefix is None:
            raise ValueError(f"weight {key!r} has no place in transformers' MambaForCausalLM")
        out[prefix[1] + key[len(prefix[0]):]] = tensor
    return out


def state_dict_from_transformers(state: dict, tied: bool, source="the weights") -> dict:
    """MambaForCausalLM weight names -> mambadna's. With tied embeddings an lm_head.weight, if saved, must equal the
    embedding (the model keeps one matrix for both)."""
    out = {}
    for key, tensor in state.items():
        prefix = next((p for p in _PREFIXES if key.startswith(p[1])), None)
        if prefix is None:
            raise ValueError(f"{source}: weight {key!r} is not part of a MambaForCausalLM")
        out[prefix[0] + key[len(prefix[1]):]] = tensor
    if tied and "lm_head.weight" in out:
        head = out.pop("lm_head.weight")
        if "embedding.weight" in out and not torch.equal(head, out["embedding.weight"]):
            raise ValueError(f"{source}: tie_word_embeddings is true but lm_head.weight differs from the embedding")
    return out


def read_weights(directory: Path, map_location="cpu") -> dict:
    """The tensors of a transformers folder: model.safetensors, or the shards its index lists."""
    from safetensors.torch import load_file

    single, index = directory / "model.safetensors", directory / SAFETENSORS_INDEX
    if single.is_file():
        return load_file(str(single), device=str(map_location))
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        state = {}
        for shard in shards:
            state.update(load_file(str(directory / shard), device=str(map_location)))
        return state
    pickles = sorted(p.name for p in directory.glob("*.bin"))
    if pickles:
        raise ValueError(f"{directory} has weights only as {pickles[0]} (a pickle, which can run code when loaded); "
                         "mambadna reads safetensors: re-save it with transformers' "
                         "model.save_pretrained(dir, safe_serialization=True)")
    raise FileNotFoundError(f"no model.safetensors in {directory}")


# ---- tokenizer ----

def _vocab(tokenizer) -> dict[str, int]:
    """Token text -> id of a mambadna tokenizer, specials included; the ByteTokenizer's bytes spelled the way the
    `tokenizers` ByteLevel pre-tokenizer spells them."""
    vocab = {text: i for i, text in SPECIAL_TOKENS.items()}
    if isinstance(tokenizer, NucleotideTokenizer):
        vocab.update({base: int(tokenizer.encode(base)[0]) for base in "ACGTN"})
    else:
        vocab.update({char: NUM_SPECIAL + byte for byte, char in _byte_level_chars().items()})
    return vocab


def _byte_level_chars() -> dict[int, str]:
    """GPT-2's bytes_to_unicode, which `tokenizers`' ByteLevel uses: printable bytes stand for themselves, the
    other 68 for chr(256), chr(257), ... in byte order."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


def tokenizer_files(name: str, **options) -> dict[str, str]:
    """{file name: text} of a `transformers.AutoTokenizer` that gives the same ids as mambadna's tokenizer `name`.

    The nucleotide vocabulary is one token per base; lowercase (soft-masked) bases and IUPAC ambiguity codes are
    normalised to what NucleotideTokenizer maps them to, and anything else becomes [UNK] (its lenient mode:
    a transformers tokenizer cannot refuse input). No special tokens are added, as mambadna trains without them.
    """
    try:
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    except ImportError:
        raise ValueError("writing a transformers tokenizer needs the tokenizers library: "
                         "pip install 'mambadna[hf]'") from None

    tokenizer = tokenizer_from_name(name, **options)
    # BPE with no merges and no pre-tokenizer is one token per character, unknown characters one [UNK] each.
    tk = Tokenizer(models.BPE(vocab=_vocab(tokenizer), merges=[], unk_token=SPECIAL_TOKENS[4]))
    if isinstance(tokenizer, NucleotideTokenizer):
        pairs = [(c.lower(), c) for c in "ACGTN"] + [(c, "N") for c in "RYKMSWBDHV" + "rykmswbdhv"]
        tk.normalizer = normalizers.Sequence([normalizers.Replace(a, b) for a, b in pairs])
        tk.decoder = decoders.Fuse()
    elif isinstance(tokenizer, ByteTokenizer):
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(list(SPECIAL_TOKENS.values()))
    names = {"pad_token": 0, "bos_token": 1, "eos_token": 2, "mask_token": 3, "unk_token": 4}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **{k: SPECIAL_TOKENS[i] for k, i in names.items()},
              "model_max_length": 10**30, "padding_side": "right", "clean_up_tokenization_spaces": False,
              "mambadna_tokenizer": tokenizer.to_dict()}
    return {TOKENIZER_FILE: tk.to_str(pretty=True), TOKENIZER_CONFIG_FILE: json.dumps(config, indent=2) + "\n"}


def tokenizer_of_folder(directory: Path, vocab_size: int) -> dict:
    """The mambadna tokenizer (its `to_dict`) a transformers folder uses: as recorded by `export`, else recognised
    from tokenizer.json's vocabulary, else (no tokenizer files) from vocab_size 16 (nucleotide) or 264 (byte)."""
    config_path, vocab_path = directory / TOKENIZER_CONFIG_FILE, directory / TOKENIZER_FILE
    if config_path.is_file():
        recorded = json.loads(config_path.read_text()).get("mambadna_tokenizer")
        if isinstance(recorded, dict) and recorded.get("name"):
            return recorded
    if vocab_path.is_file():
        vocab = json.loads(vocab_path.read_text()).get("model", {}).get("vocab", {})
        for name in ("nucleotide", "byte"):
            if vocab == _vocab(tokenizer_from_name(name)):
                return {"name": name}
        raise ValueError(f"{directory}: its tokenizer ({len(vocab)} tokens) is not one of mambadna's (nucleotide: "
                         "A C G T N, or byte); mambadna runs models only over its own vocabularies")
    for name in ("nucleotide", "byte"):
        if vocab_size == tokenizer_from_name(name).vocab_size:
            return {"name": name}
    raise ValueError(f"{directory}: no tokenizer files and vocab_size {vocab_size} is neither the nucleotide "
                     "tokenizer's 16 nor the byte tokenizer's 264; mambadna cannot tell which vocabulary it uses")


def read_transformers_config(directory: Path, hf: dict) -> dict:
    """A transformers Mamba config.json as the metadata mambadna's own config.json holds (see checkpoint.py)."""
    architectures = hf.get("architectures") or [ARCHITECTURE]
    if ARCHITECTURE not in architectures:  # e.g. a bare MambaModel: other weight names and no LM head
        raise ValueError(f"{directory}: a {architectures[0]}, not a MambaForCausalLM; mambadna reads Mamba language "
                         "models")
    tokenizer = tokenizer_of_folder(directory, hf.get("vocab_size", 0))
    config = config_from_transformers(hf, tokenizer["name"], source=directory / "config.json")
    return {"model_class": "MambaLM", "format": FORMAT, "config": config.to_dict(), "tokenizer": tokenizer,
            "init_kwargs": {}, "tied_weights": {"lm_head.weight": "embedding.weight"} if config.tie_embeddings else {}}


# ---- Hub ids ----

def looks_like_hub_id(ref) -> bool:
    return isinstance(ref, str) and bool(_HUB_ID.match(ref))


def locate(ref) -> Path:
    """The local folder for a model reference: an existing folder as it is; an `owner/name` Hub id that is not a
    local path, fetched (config, safetensors and tokenizer files only) into the Hugging Face cache, which
    `HF_HOME` / `HF_HUB_CACHE` place and `HF_HUB_OFFLINE=1` keeps to."""
    path = Path(ref)
    if path.exists() or not looks_like_hub_id(str(ref)):
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ValueError(f"{ref} is no local folder, and reading it as a Hub id needs huggingface_hub: "
                         "pip install 'mambadna[hf]'") from None
    try:
        return Path(snapshot_download(str(ref), allow_patterns=HUB_FILES))
    except Exception as err:  # offline with nothing cached, no such repo, no network: all end the same way
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FileNotFoundError(f"{ref} is neither a local folder nor a Hub model that could be fetched "
                                f"({type(err).__name__}: {reason})") from None
