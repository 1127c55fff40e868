"""Species classification windows: the sampling of the Mamba paper's great-apes task.

Each item picks a species uniformly, then a contig of that species (length-weighted), then a uniform window in
it. Input is a manifest TSV with a header ``species<TAB>fasta[<TAB>split]`` (paths relative to the manifest;
a species may have several rows; a row whose ``split`` is train/val/test goes wholly to that split, a row with
no split is cut into train/val/test like a single genome, see mambadna.data.regions) or a folder holding one
FASTA per species (the species is the file name without extensions).

A genome listed twice (the same file, or a copy of it) under two species or in two splits would put test windows
in training and report accuracy on training genomes; both are refused: by resolved path in `read_manifest`, by
content (contig lengths, then sampled bases of every contig) once the genomes are open (`check_no_copies`).
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mambadna.data.errors import DataError
from mambadna.data.genome import Genome
from mambadna.data.regions import Interval, held_out_advice
from mambadna.data.sampling import RegionWindows, WindowReader
from mambadna.data.windows import check_rank, split_intervals

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas", ".gb", ".gbk", ".genbank", ".embl")


@dataclass(frozen=True)
class ManifestRow:
    species: str
    path: Path
    split: str | None
    line: int = 0  # of the manifest (0 for a folder of FASTAs)

    def where(self) -> str:
        split = f", split {self.split}" if self.split else ""
        return f"{f'line {self.line}: ' if self.line else ''}{self.path.name} (species {self.species!r}{split})"


def read_manifest(path: str | os.PathLike, min_species: int = 2) -> list[ManifestRow]:
    """Rows of a species manifest (TSV) or of a folder of FASTAs, checked: >= `min_species` species (a test set
    may hold one), every file exists."""
    path = Path(path)
    if path.is_dir():
        rows = _rows_from_folder(path)
    elif path.is_file():
        try:
            rows = _rows_from_tsv(path)
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not a text manifest ({exc}); give a tab-separated species<TAB>fasta file"
                            ) from None
    else:
        raise DataError(f"{path}: no such manifest file or folder")
    seen: dict[Path, ManifestRow] = {}
    for row in rows:
        first = seen.setdefault(row.path.resolve(), row)
        if first is not row:
            raise DataError(f"{path}: {first.where()} and {row.where()} are the same file; a genome listed "
                            "twice puts the same sequences under two labels or in two splits: list each file once")
    species = sorted({r.species for r in rows})
    if len(species) < min_species:
        raise DataError(f"{path}: species classification needs at least {min_species} species, found {len(species)} "
                        f"({', '.join(species) or 'none'})")
    return rows


def _rows_from_folder(folder: Path) -> list[ManifestRow]:
    rows = []
    for file in sorted(folder.iterdir()):
        name = file.name[:-3] if file.name.endswith(".gz") else file.name
        if file.is_file() and name.lower().endswith(FASTA_SUFFIXES):
            rows.append(ManifestRow(name.rsplit(".", 1)[0], file, None))
    if not rows:
        raise DataError(f"{folder}: no sequence files ({', '.join(FASTA_SUFFIXES)}, optionally .gz) in the folder")
    return rows


def _rows_from_tsv(path: Path) -> list[ManifestRow]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in ("species", "fasta") if c not in header]
        if missing:
            raise DataError(f"{path}: manifest is missing column(s) {', '.join(missing)}; the header line must be "
                            f"tab-separated 'species<TAB>fasta[<TAB>split]' (found {header})")
        rows = []
        for line_no, rec in enumerate(reader, start=2):
            rec = {(k or "").strip(): (v or "").strip() for k, v in rec.items()}
            if not rec.get("species") and not rec.get("fasta"):
                continue
            if not rec.get("species") or not rec.get("fasta"):
                raise DataError(f"{path}: line {line_no}: empty species or fasta field")
            file = Path(rec["fasta"]).expanduser()
            file = file if file.is_absolute() else path.parent / file
            if not file.is_file():
                raise DataError(f"{path}: line {line_no}: FASTA {rec['fasta']!r} of species {rec['species']!r} "
                                f"not found (looked at {file}; relative paths are relative to the manifest)")
            split = rec.get("split") or None
            if split not in (None, "train", "val", "test"):
                raise DataError(f"{path}: line {line_no}: split must be train, val, test or empty, got {split!r}")
            rows.append(ManifestRow(rec["species"], file, split, line_no))
    if not rows:
        raise DataError(f"{path}: the manifest has a header but no rows")
    return rows


class SpeciesWindowDataset(Dataset):
    """``{"input_ids": LongTensor (window_bp,), "attention_mask": BoolTensor, "label": int}``; ``class_names``."""

    def __init__(self, manifest: str | os.PathLike, window_bp: int, split: str = "train",
                 num_windows: int | None = None, seed: int = 0, max_n_fraction: float = 0.1,
                 reverse_complement: bool = False, val_fraction: float = 0.1, test_fraction: float = 0.1,
                 split_by: str = "auto", rank: int = 0, world_size: int = 1, tokenizer=None, min_species: int = 2):
        check_rank(rank, world_size)
        rows = read_manifest(manifest, min_species)
        self.class_names = sorted({r.species for r in rows})
        self.split = split
        genomes = {row.path: Genome(row.path) for row in rows}
        check_no_copies(manifest, rows, genomes)
        self.per_class: list[RegionWindows] = []
        for name in self.class_names:
            parts = []
            for row in (r for r in rows if r.species == name):
                genome = genomes[row.path]
                intervals = _row_intervals(genome, row, split, val_fraction, test_fraction, split_by)
                if intervals:
                    parts.append((genome, intervals))
            if not parts:
                raise DataError(f"{manifest}: species {name!r} has no sequence in the {split!r} split")
            advice = held_out_advice(split, window_bp, [n for g, _ in parts for n in g.contigs.values()],
                                     val_fraction, test_fraction, split_by, manifest=True)
            self.per_class.append(RegionWindows(parts, window_bp, what=f"{split!r} region of species {name!r}",
                                                advice=advice))
        self.window_bp = int(window_bp)
        if num_windows is None:
            num_windows = max(1, sum(w.total_bp for w in self.per_class) // self.window_bp)
        if num_windows < 1:
            raise DataError(f"num_windows must be >= 1, got {num_windows}")
        self.num_windows = int(num_windows)
        self.reader = WindowReader(tokenizer, max_n_fraction, reverse_complement)
        self.seed, self.rank, self.world_size, self.epoch = int(seed), rank, world_size, 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(range(self.rank, self.num_windows, self.world_size))

    def window(self, index: int):
        """(label, contig, start_bp, raw bytes, rng) of item ``index`` in this epoch."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} windows")
        g = self.rank + index * self.world_size
        rng = np.random.default_rng((self.seed, self.epoch, g))
        label = int(rng.integers(self.num_classes))
        windows = self.per_class[label]
        _, contig, start, raw = self.reader.draw(windows, rng, 0, windows.n_starts)
        return label, contig, start, raw, rng

    def raw_windows(self) -> tuple[list[bytes], list[str]]:
        """(raw sequences, class names) of every item of this epoch, in order: the windows a model sees, for
        baselines that read text (k-mer counts) or embedding them as records."""
        items = [self.window(i) for i in range(len(self))]
        return [raw for _, _, _, raw, _ in items], [self.class_names[label] for label, *_ in items]

    def __getitem__(self, index: int) -> dict:
        label, _, _, raw, rng = self.window(index)
        ids = self.reader.encode(raw, rng)
        return {"input_ids": ids, "attention_mask": torch.ones(ids.shape, dtype=torch.bool), "label": label}


def _row_intervals(genome: Genome, row: ManifestRow, split: str, val_fraction: float, test_fraction: float,
                   split_by: str) -> list[Interval]:
    if split == "all":
        return [Interval(n, 0, l) for n, l in genome.contigs.items()]
    if row.split is not None:
        return [Interval(n, 0, l) for n, l in genome.contigs.items()] if row.split == split else []
    if {"val": val_fraction, "test": test_fraction}.get(split) == 0:
        return []  # this genome gives the split nothing; whether the species has it elsewhere is checked above
    return split_intervals(genome, split, val_fraction=val_fraction, test_fraction=test_fraction, by=split_by)


SAMPLE_BP = 4096  # bases read at the start, middle and end of every contig for the content digest


def content_digest(genome: Genome) -> str:
    """A digest of a genome's sequences that reads a few kilobases per contig, whatever its size: contig lengths
    (in order) and the bases at each contig's start, middle and end. Equal for a copy of the file (renamed,
    compressed, converted, other line lengths or contig names), different for another assembly."""
    contigs = []
    for name, length_bp in genome.contigs.items():
        digest = hashlib.sha256(f"{length_bp};".encode())
        for start in sorted({0, max(0, length_bp // 2 - SAMPLE_BP // 2), max(0, length_bp - SAMPLE_BP)}):
            digest.update(genome.fetch(name, start, min(length_bp, start + SAMPLE_BP)).upper())
        contigs.append(digest.hexdigest())
    return hashlib.sha256(" ".join(sorted(contigs)).encode()).hexdigest()  # contig order does not matter


def check_no_copies(manifest, rows: list[ManifestRow], genomes: dict[Path, Genome]) -> None:
    """Refuse two manifest rows whose files hold the same sequences (see `content_digest`): only files of equal
    total length are read at all."""
    by_size: dict[tuple, list[ManifestRow]] = {}
    for row in rows:
        by_size.setdefault(tuple(sorted(genomes[row.path].contigs.values())), []).append(row)
    for same_size in (group for group in by_size.values() if len(group) > 1):
        seen: dict[str, ManifestRow] = {}
        for row in same_size:
            first = seen.setdefault(content_digest(genomes[row.path]), row)
            if first is not row:
                raise DataError(f"{manifest}: {first.where()} and {row.where()} hold the same "
                                "sequences (a copy of one genome), which puts them under two labels or in two splits "
                                "(test windows seen in training): list each genome once")
