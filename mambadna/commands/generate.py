"""Sampling DNA from a trained MambaLM with the recurrent O(1)-per-token step, written as FASTA."""

from __future__ import annotations

from pathlib import Path

import torch

from mambadna.checkpoint import load
from mambadna.commands.configs import GenerateConfig
from mambadna.files import atomic_open
from mambadna.model import MambaClassifier, MambaLM
from mambadna.tokenizer import tokenizer_from_name


def load_generator(checkpoint, map_location="cpu", backbone: bool = False) -> MambaLM:
    """The language model to sample from; a fine-tuned classifier only with `backbone` (its trunk has moved on from
    next-base prediction, so what it samples is not what its pretrained model would)."""
    try:
        model = load(checkpoint, map_location=map_location)
    except FileNotFoundError as err:
        raise ValueError(str(err)) from None
    if isinstance(model, MambaClassifier):
        if not backbone:
            raise ValueError(f"{checkpoint} holds a fine-tuned classifier, not a language model; give the pretrained "
                             "model it started from (e.g. runs/pt/model), or add --backbone to sample from the "
                             "classifier's backbone as fine-tuning left it")
        return model.backbone
    if not isinstance(model, MambaLM):
        raise ValueError(f"{checkpoint} holds a {type(model).__name__}; generate samples from a MambaLM")
    return model


def generate_fasta(model: MambaLM, prompt: str, out_fasta: str | Path, num_sequences: int = 1,
                   max_new_bp: int = 200, temperature: float = 1.0, top_k: int | None = None, seed: int = 0,
                   line_width: int = 60) -> list[str]:
    """Sample `num_sequences` continuations of `prompt` (the prompt is included in each record)."""
    if not prompt:
        raise ValueError("generation needs a non-empty prompt (e.g. --prompt ACGT)")
    if num_sequences < 1 or max_new_bp < 0:
        raise ValueError(f"need num_sequences >= 1 and max_new_bp >= 0, got {num_sequences}, {max_new_bp}")
    tokenizer = tokenizer_from_name(model.config.tokenizer)
    try:
        ids = torch.as_tensor(tokenizer.encode(prompt), dtype=torch.long)
    except ValueError as err:
        raise ValueError(f"prompt: {err}") from None
    model.eval()
    generator = torch.Generator(device=model.embedding.weight.device).manual_seed(seed)
    out = model.generate(ids.unsqueeze(0).repeat(num_sequences, 1), max_new_bp, temperature=temperature,
                         top_k=top_k, generator=generator)
    seqs = [tokenizer.decode(row.tolist()) for row in out]
    out_fasta = Path(out_fasta)
    out_fasta.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out_fasta, "w") as fh:
        for i, seq in enumerate(seqs):
            fh.write(f">generated_{i} prompt_bp={len(prompt)} new_bp={max_new_bp} temperature={temperature}\n")
            for lo in range(0, len(seq), line_width):
                fh.write(seq[lo : lo + line_width] + "\n")
    return seqs


def run(cfg: GenerateConfig) -> dict:
    """The `mambadna generate` command: sample cfg.num sequences from the model, write them to the cfg.out FASTA."""
    from mambadna.commands.embed import runtime_device
    from mambadna.commands.run_dir import refuse_existing

    out = Path(cfg.out)
    model_files = Path(cfg.checkpoint).resolve()
    if out.resolve().parent == model_files or out.resolve() == model_files:
        raise ValueError(f"--out {out} is inside the model folder {cfg.checkpoint}; choose another --out")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the FASTA file to write")
    refuse_existing([out], cfg.overwrite)
    model = load_generator(cfg.checkpoint, runtime_device(cfg.runtime, cfg.device), cfg.backbone)
    seqs = generate_fasta(model, cfg.prompt, out, cfg.num, cfg.length_bp, cfg.temperature, cfg.top_k, cfg.seed)
    print(f"wrote {len(seqs)} sequence(s) of {len(seqs[0])} bp to {cfg.out}")
    return {"out": str(out), "sequences": len(seqs), "length_bp": len(seqs[0])}
