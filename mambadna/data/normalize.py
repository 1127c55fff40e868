"""Rewrite a FASTA that pyfaidx cannot index (ragged or mixed line endings, blank lines) into a clean copy."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from mambadna.data.cache import atomic_write_target
from mambadna.data.errors import DataError
from mambadna.data.formats import is_gzip

LINE_BP = 60


def normalize_fasta(src: str | os.PathLike, dst: str | os.PathLike, line_bp: int = LINE_BP) -> dict[str, int]:
    """Write ``src`` (FASTA, plain or gzip) to ``dst`` with ``\\n`` endings and ``line_bp`` bases per line.

    Headers are kept verbatim; sequence letters are kept as they are (case included). ``dst`` must differ from
    ``src`` and must not exist, so nothing of the user's is ever overwritten. Returns {contig: length_bp}.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise DataError(f"{src}: no such file")
    if dst.exists():
        raise DataError(f"{dst} already exists; normalize_fasta never overwrites a file, choose a new name")
    if line_bp < 1:
        raise DataError(f"line_bp must be >= 1, got {line_bp}")
    lengths: dict[str, int] = {}
    tmp = atomic_write_target(dst)
    opener = gzip.open if is_gzip(src) else open
    try:
        with opener(src, "rb") as fin, open(tmp, "wb") as fout:
            name, pending = None, bytearray()
            for line_no, raw in enumerate(fin, start=1):
                line = raw.rstrip(b"\r\n")
                if line.startswith(b">"):
                    if name is not None:
                        _flush(fout, pending, line_bp, final=True)
                    name = line[1:].split()[0].decode() if line[1:].split() else ""
                    if not name:
                        raise DataError(f"{src}: line {line_no}: a header with no name")
                    if name in lengths:
                        raise DataError(f"{src}: line {line_no}: contig name {name!r} appears twice; rename one "
                                        "before normalizing")
                    lengths[name] = 0
                    fout.write(line + b"\n")
                elif line.strip():
                    if name is None:
                        if line.startswith(b";"):
                            continue
                        raise DataError(f"{src}: line {line_no}: sequence before the first '>' header")
                    letters = line.replace(b" ", b"").replace(b"\t", b"")
                    lengths[name] += len(letters)
                    pending += letters
                    _flush(fout, pending, line_bp, final=False)
            if name is None:
                raise DataError(f"{src}: no FASTA record (no line starting with '>')")
            _flush(fout, pending, line_bp, final=True)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    return lengths


def _flush(fout, pending: bytearray, line_bp: int, final: bool) -> None:
    full = len(pending) // line_bp * line_bp
    for i in range(0, full, line_bp):
        fout.write(bytes(pending[i : i + line_bp]) + b"\n")
    del pending[:full]
    if final and pending:
        fout.write(bytes(pending) + b"\n")
        pending.clear()
