"""Embedding files: what `mambadna embed` writes and `mambadna probe` reads, in three formats.

- npy (default, numpy only): `embeddings.npy` (n, d) float32 pooled vectors + `index.tsv` (row, name, length_bp,
  label).
- parquet (pyarrow): `embeddings.parquet`, one row per sequence: name, label, length_bp, embedding (a fixed-size
  list of d float32), for pandas / polars / DuckDB.
- h5ad (anndata): `embeddings.h5ad`, X = the pooled vectors (n, d), obs = name, label, length_bp (indexed by name
  when names are unique, else by row number), for scanpy.

`mambadna embed` also writes `source.json`: the input file (absolute), BED regions, label regex and truncation,
from which `mambadna probe` reads the sequences again for its k-mer baseline.

Per-position vectors (`--per-position`) always go to `per_position.npy` (sum of lengths, d), whose rows of sequence
i are [pos_start, pos_end) in `index.tsv`, which is then written whatever the format. pyarrow and anndata are the
optional `formats` extra; a missing one is named with the install line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mambadna.files import atomic_open, atomic_path

EMBEDDING_FORMATS = ("npy", "parquet", "h5ad")
FILES = {"npy": "embeddings.npy", "parquet": "embeddings.parquet", "h5ad": "embeddings.h5ad"}
INDEX_NAME = "index.tsv"
PER_POSITION_NAME = "per_position.npy"
SOURCE_NAME = "source.json"  # the input embedded and how it was read, so `probe` can read the sequences again
# every file an embed run may leave in its folder, whatever the format: one run's set at a time
OUTPUT_NAMES = (*FILES.values(), INDEX_NAME, PER_POSITION_NAME, SOURCE_NAME)
# what a format needs beyond numpy: (module to import, pip name)
_NEEDS = {"parquet": ("pyarrow.parquet", "pyarrow"), "h5ad": ("anndata", "anndata")}


@dataclass
class Embeddings:
    vectors: np.ndarray  # (n, d) float32
    names: list[str]
    labels: list[str]
    lengths_bp: list[int]


def require(fmt: str):
    """The module a format is written with; ValueError naming the extra to install when it is missing."""
    import importlib

    module, package = _NEEDS[fmt]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"{fmt} output needs {package}, which is not installed: "
                         "pip install 'mambadna[formats]'") from None


def write_embeddings(out_dir: str | Path, records, pooled: np.ndarray, per_position=None, fmt: str = "npy",
                     per_position_rows: np.ndarray | None = None) -> dict:
    """Write pooled (n, d) vectors of `records` (anything with .name, .sequence, .label) as `fmt` into `out_dir`;
    -> {what: path} of the files written. Per-position vectors come as a list of (l_i, d) arrays, or were already
    streamed into `per_position.npy` while embedding, with sequence i's rows [rows[i], rows[i + 1])."""
    if fmt not in EMBEDDING_FORMATS:
        raise ValueError(f"embedding format must be one of {EMBEDDING_FORMATS}, got {fmt!r}")
    writer = require(fmt) if fmt in _NEEDS else None  # before anything is written
    if len(records) != len(pooled):
        raise ValueError(f"{len(records)} records but {len(pooled)} vectors")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = Embeddings(np.ascontiguousarray(pooled, dtype=np.float32), [r.name for r in records],
                       [r.label for r in records], [len(r.sequence) for r in records])
    files = {"embeddings": out_dir / FILES[fmt]}
    # every file under a temporary name first (mambadna/files.py): a crash never leaves half of one
    if fmt == "npy":
        with atomic_open(files["embeddings"], "wb") as fh:
            np.save(fh, table.vectors)
    else:
        with atomic_path(files["embeddings"]) as tmp:
            (_write_parquet if fmt == "parquet" else _write_h5ad)(writer, tmp, table)
    offsets = per_position_rows
    if per_position is not None:
        offsets = np.zeros(len(records) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([p.shape[0] for p in per_position])
        with atomic_open(out_dir / PER_POSITION_NAME, "wb") as fh:
            np.save(fh, np.concatenate(per_position, axis=0))
    if offsets is not None:
        files["per_position"] = out_dir / PER_POSITION_NAME
    if fmt == "npy" or offsets is not None:
        files["index"] = out_dir / INDEX_NAME
        _write_index(files["index"], table, offsets)
    return {k: str(v) for k, v in files.items()}


def remove_other_outputs(out_dir: str | Path, written) -> None:
    """Remove an earlier run's embedding files that this run did not write (another format's, a per-position
    file), so `embed --overwrite` never leaves two runs' results side by side."""
    keep = {Path(p).resolve() for p in written}
    for stale in (Path(out_dir) / name for name in OUTPUT_NAMES):
        if stale.is_file() and stale.resolve() not in keep:
            stale.unlink()


def _write_index(path: Path, table: Embeddings, offsets) -> None:
    with atomic_open(path, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        extra = ["pos_start", "pos_end"] if offsets is not None else []
        writer.writerow(["row", "name", "length_bp", "label", *extra])
        for i, (name, length, label) in enumerate(zip(table.names, table.lengths_bp, table.labels)):
            extra = [int(offsets[i]), int(offsets[i + 1])] if offsets is not None else []
            writer.writerow([i, name, length, label, *extra])


def _write_parquet(pq, path: Path, table: Embeddings) -> None:
    import pyarrow as pa

    n, d = table.vectors.shape
    # a fixed-size list keeps d in the schema, and the (n, d) block is handed over without a per-row copy
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(table.vectors.reshape(-1), type=pa.float32()), d)
    pq.write_table(pa.table({"name": pa.array(table.names, pa.string()), "label": pa.array(table.labels, pa.string()),
                             "length_bp": pa.array(table.lengths_bp, pa.int64()), "embedding": vectors}), path)


def _write_h5ad(anndata, path: Path, table: Embeddings) -> None:
    import pandas as pd  # an anndata dependency

    unique = len(set(table.names)) == len(table.names)
    index = pd.Index(table.names if unique else [str(i) for i in range(len(table.names))], dtype=str)
    obs = pd.DataFrame({"name": table.names, "label": table.labels, "length_bp": np.asarray(table.lengths_bp)},
                       index=index)
    anndata.AnnData(X=table.vectors, obs=obs).write_h5ad(path)


def _find(path: Path) -> tuple[str, Path]:
    """(format, file) of an embeddings file, or of the one embeddings file in a folder."""
    if path.is_file():
        for fmt, name in FILES.items():
            if path.suffix == Path(name).suffix:
                return fmt, path
        raise ValueError(f"{path}: not an embeddings file (expected .npy, .parquet or .h5ad)")
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or folder")
    found = [(fmt, path / name) for fmt, name in FILES.items() if (path / name).is_file()]
    if not found:
        raise ValueError(f"{path}: no {', '.join(FILES.values())} (written by `mambadna embed`)")
    if len(found) > 1:
        raise ValueError(f"{path} holds several embedding files ({', '.join(p.name for _, p in found)}); "
                         "pass the one to read")
    return found[0]


def load_embeddings(path: str | Path) -> Embeddings:
    """Vectors, names, labels and lengths from `write_embeddings`' output: a folder or one of its files."""
    fmt, file = _find(Path(path))
    if fmt == "npy":
        index = file.with_name(INDEX_NAME)
        if not index.is_file():
            raise ValueError(f"{file.parent}: embeddings.npy without its {INDEX_NAME}")
        vectors = np.load(file, allow_pickle=False)
        with open(index, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        table = Embeddings(vectors, [r["name"] for r in rows], [r["label"] for r in rows],
                           [int(r["length_bp"]) for r in rows])
    elif fmt == "parquet":
        data = require(fmt).read_table(file)
        column = data.column("embedding").combine_chunks()
        d = column.type.list_size
        vectors = column.values.to_numpy(zero_copy_only=False).reshape(-1, d).astype(np.float32, copy=False)
        table = Embeddings(vectors, data.column("name").to_pylist(), data.column("label").to_pylist(),
                           data.column("length_bp").to_pylist())
    else:
        adata = require(fmt).read_h5ad(file)
        table = Embeddings(np.asarray(adata.X, dtype=np.float32), [str(x) for x in adata.obs["name"]],
                           [str(x) for x in adata.obs["label"]], [int(x) for x in adata.obs["length_bp"]])
    if len(table.labels) != len(table.vectors):
        raise ValueError(f"{file}: {len(table.labels)} index rows but {len(table.vectors)} vectors")
    return table


def read_embeddings(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """(pooled vectors (n, d), labels): what `mambadna probe` needs."""
    table = load_embeddings(path)
    return table.vectors, table.labels
