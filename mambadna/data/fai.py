"""Checks on an existing ``.fai`` index before trusting it: parseable, not older than the FASTA, and consistent
with the FASTA's bytes (each record's header sits right before its offset, its sequence ends where the lengths
say, and no record of the FASTA is missing from the index: an index newer than its FASTA but listing fewer
contigs would otherwise hide them). A bad user index is never rewritten; the caller builds a fresh one in the
cache folder instead. The same check catches layouts pyfaidx indexes wrongly (a last line longer than the rest)."""

from __future__ import annotations

import os
from pathlib import Path

# between two records there is a line end, one header line and its line end; more than this is not a header
MAX_GAP_BYTES = 1 << 16


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


def fai_problem(fai: Path, fasta: Path, compressed: bool, check_age: bool = True) -> str | None:
    """Why ``fai`` cannot be trusted for ``fasta`` (a phrase for a message), or None when it looks right."""
    rows = read_fai(fai)
    if rows is None:
        return "it is not a valid .fai index (corrupt or truncated)"
    if check_age and fai.stat().st_mtime < fasta.stat().st_mtime:
        return "it is older than the FASTA (stale)"
    if compressed:
        return None  # offsets are into the uncompressed stream; pyfaidx re-checks them through the .gzi
    size = fasta.stat().st_size
    fd = os.open(fasta, os.O_RDONLY)
    try:
        previous_end, previous_name = 0, None
        for name, length_bp, offset, line_bases, line_bytes in sorted(rows, key=lambda r: r[2]):
            head = os.pread(fd, min(offset, 4096), max(0, offset - 4096)).rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
            if not head.startswith(b">" + name.encode()):
                return f"its offset for contig {name!r} does not point just after that contig's header"
            if _unlisted_record(fd, previous_end, offset):
                after = f"after contig {previous_name!r}" if previous_name else "before its first contig"
                return f"it lists fewer contigs than the FASTA (a record {after} is missing from it)"
            end = offset
            if line_bases:
                full_lines, rest = divmod(length_bp, line_bases)
                end = offset + full_lines * line_bytes + rest
                if end > size:
                    return f"its length for contig {name!r} runs past the end of the FASTA"
                after = os.pread(fd, 1, end)
                if rest and after not in (b"", b"\n", b"\r"):
                    return f"its length for contig {name!r} disagrees with the FASTA"
                if not rest and after not in (b"", b">", b"\n", b"\r"):
                    return f"its length for contig {name!r} disagrees with the FASTA"
            previous_end, previous_name = end, name
        tail = os.pread(fd, MAX_GAP_BYTES, previous_end)
        if tail.strip() or size - previous_end > MAX_GAP_BYTES:
            return f"it lists fewer contigs than the FASTA (there is more after contig {previous_name!r})"
    finally:
        os.close(fd)
    return None


def _unlisted_record(fd: int, start: int, offset: int) -> bool:
    """True when bytes [start, offset) of the FASTA hold more than line ends and one header line: a record the
    index does not list (comment lines ';' before the first record are allowed)."""
    if offset - start > MAX_GAP_BYTES:
        return True
    lines = [line for line in os.pread(fd, offset - start, start).splitlines() if line.strip()]
    headers = [line for line in lines if line.startswith(b">")]
    return len(headers) != 1 or any(not line.startswith((b">", b";")) for line in lines)
