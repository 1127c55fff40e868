"""Tables of sequences in the formats users already have: CSV/TSV, parquet, and a Hugging Face `datasets` folder
(what `Dataset.save_to_disk` writes).

A `datasets` folder is Arrow IPC stream files listed in its state.json, so pyarrow reads it without the `datasets`
library (and its dependencies); a ClassLabel column (integers with names in dataset_info.json) is read as its
names. pyarrow is the optional `formats` extra; CSV/TSV need nothing.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from mambadna.data.errors import DataError

DELIMITED_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
DATASET_STATE = "state.json"
DATASET_DICT = "dataset_dict.json"


def is_dataset_folder(path: Path) -> bool:
    return path.is_dir() and ((path / DATASET_STATE).is_file() or (path / DATASET_DICT).is_file())


def is_table(path) -> bool:
    """True for what `read_table` reads (by extension, or a `datasets` folder); everything else is a FASTA."""
    path = Path(path)
    return path.suffix.lower() in DELIMITED_SUFFIXES + PARQUET_SUFFIXES or is_dataset_folder(path)


def read_table(path, required: list[str], optional: tuple[str, ...] = ()) -> tuple[dict[str, list[str]], str]:
    """({column: values as str} for the `required` columns and the `optional` ones present, how rows are counted:
    "line" for CSV/TSV (1-based, header included) or "row" (0-based)). Missing cells read as ""."""
    path = Path(path)
    if is_dataset_folder(path):
        table, what = _read_dataset(path), "datasets folder"
    elif path.suffix.lower() in PARQUET_SUFFIXES:
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        table, what = _pyarrow("parquet file").parquet.read_table(path), "parquet file"
    elif path.is_file():
        return _read_delimited(path, required, optional), "line"
    else:
        raise DataError(f"{path}: no such file")
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; this {what} has columns {table.column_names}")
    names = _class_names(path) if what == "datasets folder" else {}
    out = {}
    for column in [*required, *(c for c in optional if c in table.column_names)]:
        values = table.column(column).to_pylist()
        labels = names.get(column)
        out[column] = [_text(labels[v] if labels is not None and v is not None and v >= 0 else v) for v in values]
    return out, "row"


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("ascii", errors="replace")
    return str(value)


def _read_delimited(path: Path, required: list[str], optional: tuple[str, ...]) -> dict[str, list[str]]:
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        return _read_rows(path, delimiter, required, optional)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.object[exc.start]:#04x}); it looks "
                        "like latin-1 or another legacy encoding: save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                        ) from None


def _read_rows(path: Path, delimiter: str, required: list[str], optional: tuple[str, ...]) -> dict[str, list[str]]:
    # utf-8-sig: a byte-order mark (as Excel writes) is not part of the first column's name
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; header is {header} (delimiter "
                            f"{delimiter!r}, chosen from the file extension)")
        columns = [*required, *(c for c in optional if c in header)]
        out: dict[str, list[str]] = {c: [] for c in columns}
        for row in reader:
            for c in columns:
                out[c].append(row.get(c) or "")
    return out


def _pyarrow(what: str):
    try:
        import pyarrow
        import pyarrow.ipc  # noqa: F401  (submodules used below)
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise DataError(f"reading a {what} needs pyarrow, which is not installed: "
                        "pip install 'mambadna[formats]'") from None
    return pyarrow


def _read_dataset(path: Path):
    """The Arrow table of a `Dataset.save_to_disk` folder."""
    if (path / DATASET_DICT).is_file() and not (path / DATASET_STATE).is_file():
        splits = json.loads((path / DATASET_DICT).read_text()).get("splits", [])
        raise DataError(f"{path} holds a DatasetDict with splits {splits}; pass one split's folder, e.g. "
                        f"{path / (splits[0] if splits else 'train')}")
    pa = _pyarrow("datasets folder")
    try:
        state = json.loads((path / DATASET_STATE).read_text())
        files = [path / f["filename"] for f in state.get("_data_files", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path / DATASET_STATE}: not a readable datasets state file ({type(exc).__name__}: {exc}); "
                        "save the dataset again with Dataset.save_to_disk") from None
    if not files:
        raise DataError(f"{path / DATASET_STATE} lists no data files")
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise DataError(f"{path}: data files {absent} listed in {DATASET_STATE} are missing")
    tables = []
    for file in files:
        try:
            with pa.memory_map(str(file)) as source:
                tables.append(pa.ipc.open_stream(source).read_all())
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{file}: not a readable Arrow file of the datasets folder ({exc}); it is damaged or "
                            "truncated: save the dataset again with Dataset.save_to_disk") from None
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def _class_names(path: Path) -> dict[str, list[str]]:
    """{column: names} of the ClassLabel columns in a `datasets` folder's dataset_info.json."""
    info = path / "dataset_info.json"
    features = json.loads(info.read_text()).get("features", {}) if info.is_file() else {}
    return {column: feature["names"] for column, feature in features.items()
            if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and "names" in feature}
