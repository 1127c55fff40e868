"""Embeddings of sequences from a trained model: pooled per sequence, optionally per position.

The files they are written to (npy + TSV, parquet, h5ad) are mambadna/commands/embedding_io.py's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mambadna.checkpoint import load
from mambadna.chunking import check_chunk_bp
from mambadna.model import MambaClassifier, MambaLM, pool


@dataclass
class Record:
    name: str
    sequence: bytes
    label: str = ""


def read_records(path: str | Path, label_regex: str = "", sequence_column: str = "sequence",
                 label_column: str = "label", name_column: str = "name") -> list[Record]:
    """Sequences of a FASTA (labels from `label_regex`'s group in the header, if given) or a table (CSV/TSV,
    parquet, a Hugging Face `datasets` folder) with a `sequence` column and optional `name` and `label` columns."""
    from mambadna.data import Genome
    from mambadna.data.labelled import fasta_headers
    from mambadna.data.tables import is_table, read_table

    path = Path(path)
    if is_table(path):
        columns, _ = read_table(path, [sequence_column], (name_column, label_column))
        n = len(columns[sequence_column])
        names, labels = columns.get(name_column, [""] * n), columns.get(label_column, [""] * n)
        records = [Record(names[i] or f"seq{i}", columns[sequence_column][i].strip().encode(), labels[i])
                   for i in range(n)]
    elif not path.is_file():
        raise ValueError(f"{path}: no such file")
    else:
        pattern = re.compile(label_regex) if label_regex else None
        genome = Genome(path)
        # pyfaidx keeps only the first word of a header; labels usually live in the rest of the line
        headers = fasta_headers(genome.fasta_path if not genome.compressed else genome.source_path) if pattern else {}
        records = []
        for name, length_bp in genome.contigs.items():
            match = pattern.search(headers.get(name, name)) if pattern else None
            records.append(Record(name, genome.fetch(name, 0, length_bp), match.group(1) if match else ""))
    if not records:
        raise ValueError(f"{path}: no sequences")
    empty = [r.name for r in records if not r.sequence]
    if empty:
        raise ValueError(f"{path}: empty sequence(s) {empty[:5]}")
    return records


def load_lm(checkpoint: str | Path, map_location="cpu") -> MambaLM:
    """A MambaLM from any saved model folder; a MambaClassifier folder gives its backbone."""
    try:
        model = load(checkpoint, map_location=map_location)
    except FileNotFoundError as err:
        raise ValueError(str(err)) from None
    return model.backbone if isinstance(model, MambaClassifier) else model


@torch.no_grad()
def embed_records(model: MambaLM, records: list[Record], pooling: str = "mean", per_position: bool = False,
                  batch_size: int = 16, max_length_bp: int | None = None, device: str = "cpu",
                  chunk_bp: int | None = None):
    """-> (pooled (n, d) float32, per-position list of (l_i, d) arrays or None). Batches are length-sorted and
    right-padded (the model is causal: right padding leaves real positions unchanged). `chunk_bp` runs each batch
    chunk by chunk with the state carried (`MambaLM.embed(..., chunk_bp=...)`): the same vectors in activation
    memory that grows with the chunk rather than the sequence."""
    from mambadna.tokenizer import tokenizer_from_name

    if chunk_bp is not None:
        check_chunk_bp(chunk_bp)
    tokenizer = tokenizer_from_name(model.config.tokenizer)
    model = model.to(device).eval()
    order = sorted(range(len(records)), key=lambda i: len(records[i].sequence))
    pooled = np.zeros((len(records), model.config.d_model), dtype=np.float32)
    positions: list[np.ndarray | None] = [None] * len(records)
    for lo in range(0, len(order), batch_size):
        idx = order[lo : lo + batch_size]
        seqs = [records[i].sequence[:max_length_bp] if max_length_bp else records[i].sequence for i in idx]
        batch = tokenizer.batch_encode(seqs)
        input_ids, attention_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        if chunk_bp is not None and not per_position:
            _, vectors = model.embed(input_ids, attention_mask, pooling, chunk_bp)  # (b, d), never (b, l, d)
        else:
            hidden = model.hidden_states(input_ids)  # (b, l, d)
            vectors = pool(hidden, attention_mask, pooling)  # (b, d), as MambaLM.embed pools
        for j, i in enumerate(idx):
            pooled[i] = vectors[j].float().cpu().numpy()
            if per_position:
                positions[i] = hidden[j, : len(seqs[j])].float().cpu().numpy()
    return pooled, (positions if per_position else None)
