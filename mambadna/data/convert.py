"""One-time conversions of inputs pyfaidx cannot index (plain gzip, GenBank, EMBL, MAF) to a cached FASTA.

The user's file is only ever read. Output goes to ``<cache>/converted/<path+mtime+size key>-<name>.fa`` and is
written to a temporary name first, so an interrupted conversion is simply redone next time.
"""

from __future__ import annotations

import gzip
import os
import shutil
import warnings
from pathlib import Path

from mambadna.data.cache import atomic_write_target, cached_path, file_key, writing_derived
from mambadna.data.errors import DataError, DataWarning
from mambadna.data.formats import is_gzip

LINE_BP = 60
# Biopython only warns about a record cut short (no closing `//`, fewer bases than its LOCUS / ID line says); here
# they are errors: training on half a genome because a download stopped is not what anyone wants
TRUNCATION_WARNINGS = ("Premature end of", "Expected sequence length")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".bgz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return Path(name).stem or "genome"


def _open_text(path: Path):
    return gzip.open(path, "rt") if is_gzip(path) else open(path, "rt")


def write_fasta_record(fh, name: str, seq: str, line_bp: int = LINE_BP) -> None:
    fh.write(f">{name}\n")
    for i in range(0, len(seq), line_bp):
        fh.write(seq[i : i + line_bp])
        fh.write("\n")


def converted_fasta(path: Path, fmt: str) -> Path:
    """The cached plain FASTA for ``path`` (gzip FASTA, GenBank, EMBL or MAF), converting on first use."""
    out = cached_path("converted", file_key(path), _stem(path) + ".fa")
    if out.exists():
        return out
    tmp = atomic_write_target(out)
    try:
        with writing_derived("plain FASTA conversion", path):
            _convert(path, fmt, tmp, out)
        os.replace(tmp, out)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: reading failed during conversion ({exc}); is the file truncated?") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _convert(path: Path, fmt: str, tmp: Path, out: Path) -> None:
    if fmt == "fasta":
        warnings.warn(f"{path} is plain gzip, not bgzip, so it cannot be indexed in place; decompressing it "
                      f"once to {out} (to avoid this, recompress with `bgzip` from htslib)", DataWarning,
                      stacklevel=4)
        with gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 22)
    elif fmt in ("genbank", "embl"):
        _convert_seqio(path, fmt, tmp)
    elif fmt == "maf":
        _convert_maf(path, tmp)
    else:
        raise DataError(f"{path}: no conversion for format {fmt!r}")


def _convert_seqio(path: Path, fmt: str, tmp: Path) -> None:
    from Bio import SeqIO

    n_records = 0
    try:
        with _open_text(path) as src, open(tmp, "w") as dst, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for record in SeqIO.parse(src, fmt):
                _refuse_truncated(path, fmt, record.id, caught)
                seq = str(record.seq)
                if not seq:
                    continue
                write_fasta_record(dst, record.id, seq)
                n_records += 1
        for warning in caught:  # the others, as they were
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    except DataError:
        raise
    except ValueError as exc:  # Biopython reports malformed records and undefined sequences as ValueError
        if str(exc).startswith(TRUNCATION_WARNINGS) or "Footer format unexpected" in str(exc):
            raise DataError(f"{path}: the last {fmt} record is cut short ({exc}): the file is truncated (an "
                            "interrupted download?); fetch it again") from None
        raise DataError(f"{path}: Biopython could not parse it as {fmt} ({exc})") from exc
    if n_records == 0:
        raise DataError(f"{path}: no {fmt} record with a sequence")


def _refuse_truncated(path: Path, fmt: str, record_id: str, caught: list) -> None:
    """A DataError for a truncation warning Biopython gave while reading `record_id`."""
    for warning in caught:
        text = str(warning.message)
        if text.startswith(TRUNCATION_WARNINGS):
            raise DataError(f"{path}: {fmt} record {record_id!r} is cut short ({text}): the file is truncated or its "
                            "LOCUS / ID length is wrong; fetch it again")


def _convert_maf(path: Path, tmp: Path) -> None:
    """Every row of every block becomes one ungapped contig named ``src:start-end`` (0-based, half-open)."""
    from Bio import AlignIO

    seen: set[str] = set()
    try:
        with _open_text(path) as src, open(tmp, "w") as dst:
            for block in AlignIO.parse(src, "maf"):
                for row in block:
                    start = row.annotations.get("start", 0)
                    seq = str(row.seq).replace("-", "")
                    name = f"{row.id}:{start}-{start + len(seq)}"
                    if name in seen:
                        continue
                    seen.add(name)
                    write_fasta_record(dst, name, seq)
    except ValueError as exc:
        raise DataError(f"{path}: Biopython could not parse it as MAF ({exc})") from exc
    if not seen:
        raise DataError(f"{path}: no alignment block in the MAF file")
