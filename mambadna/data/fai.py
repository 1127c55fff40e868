"""Checks on an existing ``.fai`` index before trusting it: parseable, not older than the FASTA, and consistent
with the FASTA's bytes (each record's header sits right before its offset and its sequence ends where the
lengths say). A bad user index is never rewritten; the caller builds a fresh one in the cache folder instead."""

from __future__ import annotations

import os
from pathlib import Path


def read_fai(fai: Path) -> list[tuple[str, int, int, int, int]] | None:
    """(name, length_bp, offset, line_bases, line_bytes) rows, or None when the file is not a valid index."""
    rows = []
    try:
        text = fai.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) < 5:
            return None
        try:
            length_bp, offset, line_bases, line_bytes = (int(f) for f in fields[1:5])
        except ValueError:
            return None
        if min(length_bp, offset, line_bases, line_bytes) < 0 or line_bytes < line_bases:
            return None
        rows.append((fields[0], length_bp, offset, line_bases, line_bytes))
    return rows or None


def fai_problem(fai: Path, fasta: Path, compressed: bool) -> str | None:
    """Why ``fai`` cannot be trusted for ``fasta`` (a phrase for a message), or None when it looks right."""
    rows = read_fai(fai)
    if rows is None:
        return "it is not a valid .fai index (corrupt or truncated)"
    if fai.stat().st_mtime < fasta.stat().st_mtime:
        return "it is older than the FASTA (stale)"
    if compressed:
        return None  # offsets are into the uncompressed stream; pyfaidx re-checks them through the .gzi
    size = fasta.stat().st_size
    fd = os.open(fasta, os.O_RDONLY)
    try:
        for name, length_bp, offset, line_bases, line_bytes in rows:
            head = os.pread(fd, min(offset, 4096), max(0, offset - 4096)).rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
            if not head.startswith(b">" + name.encode()):
                return f"its offset for contig {name!r} does not point just after that contig's header"
            if line_bases == 0:
                continue
            full_lines, rest = divmod(length_bp, line_bases)
            end = offset + full_lines * line_bytes + rest
            if end > size:
                return f"its length for contig {name!r} runs past the end of the FASTA"
            after = os.pread(fd, 1, end)
            if rest and after not in (b"", b"\n", b"\r"):
                return f"its length for contig {name!r} disagrees with the FASTA"
            if not rest and after not in (b"", b">", b"\n", b"\r"):
                return f"its length for contig {name!r} disagrees with the FASTA"
    finally:
        os.close(fd)
    return None
