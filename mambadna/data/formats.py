"""Recognise what kind of sequence file the user handed us, from its first bytes rather than its name."""

from __future__ import annotations

import gzip
from pathlib import Path

from mambadna.data.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
FORMATS = ("fasta", "genbank", "embl", "maf")


def is_bgzf(path: Path) -> bool:
    """True for block-gzip (bgzip) files: a gzip header whose extra field carries the 'BC' subfield."""
    with open(path, "rb") as fh:
        head = fh.read(18)
    # gzip magic, deflate, FEXTRA flag set, XLEN 6, subfield id 'BC' (SAM spec, section 4.1)
    return len(head) >= 18 and head[:4] == b"\x1f\x8b\x08\x04" and head[12:14] == b"BC"


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def _first_text(path: Path, n_bytes: int = 4096) -> str:
    opener = gzip.open if is_gzip(path) else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(n_bytes)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read the file ({exc}); is it a truncated or corrupt gzip?") from exc
    return head.decode("latin-1")


def sniff_format(path: Path) -> str:
    """One of FORMATS, from the content (compressed or not). Empty files and unknown content raise DataError."""
    text = _first_text(path)
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise DataError(f"{path}: the file is empty (no FASTA records)")
    if stripped.startswith(">") or stripped.startswith(";"):
        return "fasta"
    if stripped.startswith("LOCUS"):
        return "genbank"
    if stripped.startswith("ID "):
        return "embl"
    if stripped.startswith("##maf") or stripped.startswith("a ") or stripped.startswith("a\n"):
        return "maf"
    first_line = stripped.splitlines()[0][:60]
    raise DataError(f"{path}: unrecognised sequence format (first line {first_line!r}); expected FASTA "
                    "('>name'), GenBank ('LOCUS'), EMBL ('ID') or MAF ('##maf'), optionally gzip/bgzip compressed")
