"""Embeddings of sequences from a trained model: pooled per sequence, optionally per position.

Output in a folder: `embeddings.npy` (n, d) float32 pooled vectors, `index.tsv` (row, name, length_bp, label,
and for per-position output the [start, end) rows of that sequence in `per_position.npy` (sum of lengths, d)).
With pyarrow installed, `embeddings.parquet` holds the same table with the vectors as a list column.
"""

from __future__ import annotations

import csv
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mambadna.checkpoint import load
from mambadna.chunking import check_chunk_bp
from mambadna.files import atomic_open, atomic_path
from mambadna.model import MambaClassifier, MambaLM, pool


@dataclass
class Record:
    name: str
    sequence: bytes
    label: str = ""


def read_records(path: str | Path, label_regex: str = "", sequence_column: str = "sequence",
                 label_column: str = "label", name_column: str = "name") -> list[Record]:
    """Sequences of a FASTA (labels from `label_regex`'s group in the header, if given) or a CSV/TSV table with a
    `sequence` column and optional `name` and `label` columns."""
    from mambadna.data import Genome
    from mambadna.data.labelled import fasta_headers

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        delimiter = "," if path.suffix.lower() == ".csv" else "\t"
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            if sequence_column not in (reader.fieldnames or []):
                raise ValueError(f"{path}: no {sequence_column!r} column; header is {reader.fieldnames}")
            records = [Record(row.get(name_column) or f"seq{i}", row[sequence_column].strip().encode(),
                              row.get(label_column) or "") for i, row in enumerate(reader)]
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


def write_embeddings(out_dir: str | Path, records: list[Record], pooled: np.ndarray, per_position=None) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"embeddings": out_dir / "embeddings.npy", "index": out_dir / "index.tsv"}
    with atomic_open(files["embeddings"], "wb") as fh:
        np.save(fh, pooled)
    offsets = np.zeros(len(records) + 1, dtype=np.int64)
    if per_position is not None:
        offsets[1:] = np.cumsum([p.shape[0] for p in per_position])
        files["per_position"] = out_dir / "per_position.npy"
        with atomic_open(files["per_position"], "wb") as fh:
            np.save(fh, np.concatenate(per_position, axis=0))
    with atomic_open(files["index"], "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["row", "name", "length_bp", "label"] + (["pos_start", "pos_end"] if per_position else []))
        for i, rec in enumerate(records):
            extra = [int(offsets[i]), int(offsets[i + 1])] if per_position is not None else []
            writer.writerow([i, rec.name, len(rec.sequence), rec.label, *extra])
    if importlib.util.find_spec("pyarrow") is not None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"name": [r.name for r in records], "length_bp": [len(r.sequence) for r in records],
                          "label": [r.label for r in records], "embedding": list(pooled)})
        files["parquet"] = out_dir / "embeddings.parquet"
        with atomic_path(files["parquet"]) as tmp:
            pq.write_table(table, tmp)
    return {k: str(v) for k, v in files.items()}


def read_embeddings(folder: str | Path) -> tuple[np.ndarray, list[str]]:
    """(pooled vectors (n, d), labels) from a folder written by `write_embeddings`."""
    folder = Path(folder)
    vectors_path, index_path = folder / "embeddings.npy", folder / "index.tsv"
    if not vectors_path.is_file() or not index_path.is_file():
        raise ValueError(f"{folder}: expected embeddings.npy and index.tsv (written by `mambadna embed`)")
    vectors = np.load(vectors_path, allow_pickle=False)
    with open(index_path, newline="") as fh:
        labels = [row["label"] for row in csv.DictReader(fh, delimiter="\t")]
    if len(labels) != len(vectors):
        raise ValueError(f"{folder}: index.tsv has {len(labels)} rows but embeddings.npy {len(vectors)}")
    return vectors, labels
