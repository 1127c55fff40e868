"""Rewrite a FASTA that pyfaidx cannot index (ragged or mixed line endings, blank lines) into a clean copy: plain
text, or bgzip (block gzip, which pyfaidx indexes in place) when the new name ends in .gz / .bgz."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from mambadna.data.errors import DataError
from mambadna.data.formats import is_gzip
from mambadna.files import atomic_path

LINE_BP = 60


def normalize_fasta(src: str | os.PathLike, dst: str | os.PathLike, line_bp: int = LINE_BP) -> dict[str, int]:
    """Write ``src`` (FASTA, plain or gzip) to ``dst`` with ``\\n`` endings and ``line_bp`` bases per line.

    Headers are kept verbatim; sequence letters are kept as they are (case included). ``dst`` must differ from
    ``src`` and must not exist, so nothing of the user's is ever overwritten. Returns {contig: length_bp}.
    """
    folder_like = str(dst).endswith(("/", os.sep))  # Path() drops the slash that says "a folder"
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise DataError(f"{src}: no such file")
    if folder_like or dst.is_dir():
        there = "" if dst.is_dir() else ", which does not exist"
        raise DataError(f"{dst}/ names a folder{there}; give the new FASTA's file name, e.g. {dst / src.name}")
    if not dst.parent.is_dir():
        raise DataError(f"cannot write {dst}: the folder {dst.parent} does not exist; create it or choose another name")
    if dst.exists():
        raise DataError(f"{dst} already exists; normalize_fasta never overwrites a file, choose a new name")
    if line_bp < 1:
        raise DataError(f"line_bp must be >= 1, got {line_bp}")
    lengths: dict[str, int] = {}
    opener = gzip.open if is_gzip(src) else open
    with atomic_path(dst) as tmp:
        with opener(src, "rb") as fin, _writer(dst, tmp) as fout:
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
    return lengths


def _writer(dst: Path, tmp: Path):
    """What the name promises: bgzip for .gz / .bgz (indexable in place), plain text otherwise."""
    if dst.name.endswith((".gz", ".bgz")):
        from Bio import bgzf

        return bgzf.BgzfWriter(str(tmp), "wb")
    return open(tmp, "wb")


def _flush(fout, pending: bytearray, line_bp: int, final: bool) -> None:
    full = len(pending) // line_bp * line_bp
    for i in range(0, full, line_bp):
        fout.write(bytes(pending[i : i + line_bp]) + b"\n")
    del pending[:full]
    if final and pending:
        fout.write(bytes(pending) + b"\n")
        pending.clear()
