"""Labelled variable-length sequences from a table (CSV/TSV, parquet or a Hugging Face ``datasets`` folder with
sequence and label columns) or a FASTA whose headers carry the label.

Labels are kept as strings; ``class_names`` is their sorted set (numeric labels sort numerically) and an item's
``label`` is the index into it. Sequences are checked for non-DNA letters at load (row/record and offset named).
Batch them with mambadna.data.batching.PadCollate, optionally with LengthBucketBatchSampler.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mambadna.data.errors import DataError
from mambadna.data.genome import _VALID, Genome
from mambadna.data.tables import is_table, read_table


def _check_dna(seq: bytes, where: str) -> None:
    bad = ~_VALID[np.frombuffer(seq, dtype=np.uint8)]
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where} has a non-DNA letter {chr(seq[i])!r} at offset {i} (0-based)")


def _label_sort_key(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


class LabelledSequenceDataset(Dataset):
    """``{"input_ids": LongTensor (l_i,), "label": int}`` per sequence; ``class_names``, ``lengths``."""

    def __init__(self, sequences: list[bytes], labels: list[str], tokenizer=None, class_names=None, source="?"):
        if len(sequences) != len(labels):
            raise DataError(f"{source}: {len(sequences)} sequences but {len(labels)} labels")
        if not sequences:
            raise DataError(f"{source}: no labelled sequences")
        if tokenizer is None:
            from mambadna.tokenizer import NucleotideTokenizer

            tokenizer = NucleotideTokenizer()
        self.tokenizer = tokenizer
        self.class_names = list(class_names) if class_names is not None else sorted(set(labels), key=_label_sort_key)
        index = {name: i for i, name in enumerate(self.class_names)}
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise DataError(f"{source}: labels {unknown[:5]} are not among class_names {self.class_names[:10]}")
        self.labels = [index[label] for label in labels]
        self.sequences = sequences
        self.lengths = [len(s) for s in sequences]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> dict:
        ids = np.asarray(self.tokenizer.encode(self.sequences[index]), dtype=np.int64)
        return {"input_ids": torch.from_numpy(ids), "label": self.labels[index]}

    @classmethod
    def from_table(cls, path: str | os.PathLike, sequence_column: str = "sequence", label_column: str = "label",
                   tokenizer=None, class_names=None) -> "LabelledSequenceDataset":
        """A table naming the two columns: CSV (``.csv``), TSV (``.tsv``/``.txt``), parquet (``.parquet``), or a
        Hugging Face ``datasets`` folder (``Dataset.save_to_disk``); see mambadna.data.tables."""
        path = Path(path)
        columns, counted = read_table(path, [sequence_column, label_column])
        first = 2 if counted == "line" else 0  # CSV lines count from 1, after the header
        seqs, labels = [], []
        for i, (raw, label) in enumerate(zip(columns[sequence_column], columns[label_column]), start=first):
            seq = (raw or "").strip().encode()
            if not seq:
                raise DataError(f"{path}: {counted} {i}: empty sequence")
            _check_dna(seq, f"{path}: {counted} {i}")
            label = (label or "").strip()
            if not label:  # it would become a class named ''
                raise DataError(f"{path}: {counted} {i}: no label in column {label_column!r}; give every row one, "
                                "or drop the unlabelled rows")
            seqs.append(seq)
            labels.append(label)
        return cls(seqs, labels, tokenizer, class_names, source=str(path))

    @classmethod
    def from_path(cls, path: str | os.PathLike, sequence_column: str = "sequence", label_column: str = "label",
                  label_regex: str | None = None, label_key: str | None = None, tokenizer=None,
                  class_names=None) -> "LabelledSequenceDataset":
        """`from_table` for tables (by extension, or a ``datasets`` folder), `from_fasta` for everything else."""
        if is_table(path):
            return cls.from_table(path, sequence_column, label_column, tokenizer, class_names)
        return cls.from_fasta(path, label_regex, label_key, tokenizer, class_names)

    @classmethod
    def from_fasta(cls, path: str | os.PathLike, label_regex: str | None = None, label_key: str | None = None,
                   tokenizer=None, class_names=None) -> "LabelledSequenceDataset":
        """Records of a FASTA; the label is the one group of ``label_regex`` searched in the header line, or
        the value of ``label_key=value`` in it."""
        if (label_regex is None) == (label_key is None):
            raise DataError("give exactly one of label_regex (a regex with one group) or label_key (for key=value)")
        if label_key is not None:
            pattern = re.compile(rf"(?:^|[\s;|]){re.escape(label_key)}=([^\s;|]+)")
        else:
            try:
                pattern = re.compile(label_regex)
            except re.error as exc:
                raise DataError(f"label_regex {label_regex!r} is not a valid regex ({exc})") from exc
            if pattern.groups != 1:
                raise DataError(f"label_regex {label_regex!r} must have exactly one group, it has {pattern.groups}")
        genome = Genome(path, validate=True)
        headers = fasta_headers(genome.fasta_path if not genome.compressed else genome.source_path)
        seqs, labels = [], []
        for name, length_bp in genome.contigs.items():
            header = headers.get(name, name)
            match = pattern.search(header)
            if match is None:
                how = f"label_key {label_key!r}" if label_key else f"label_regex {label_regex!r}"
                raise DataError(f"{path}: no label in header {header[:80]!r} ({how} does not match)")
            seqs.append(genome.fetch(name, 0, length_bp))
            labels.append(match.group(1))
        return cls(seqs, labels, tokenizer, class_names, source=str(path))


def fasta_headers(path: Path) -> dict[str, str]:
    """{contig name: full header line without '>'}; pyfaidx keeps only the name, labels live in the rest."""
    import gzip

    opener = gzip.open if path.name.endswith((".gz", ".bgz")) else open
    out = {}
    with opener(path, "rt") as fh:
        for line in fh:
            if line.startswith(">"):
                header = line[1:].rstrip("\r\n")
                out[header.split()[0] if header.split() else ""] = header
    return out
