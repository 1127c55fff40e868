"""Checks on an existing ``.fai`` index before trusting it: parseable, not older than the FASTA, and consistent
with the FASTA's bytes (each record's header sits right before its offset, its sequence ends where the lengths
say, and no record of the FASTA is missing from the index: an index newer than its FASTA but listing fewer
contigs would otherwise hide them). A bad user index is never rewritten; the caller builds a fresh one in the
cache folder instead. The same check catches layouts pyfaidx indexes wrongly (a last line longer than the rest)."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

# between two records there is a line end, one header line and its line end; more than this is not a header
MAX_GAP_BYTES = 1 << 16


def read_fai(fai: Path) -> list[tuple[str, int, int, int, int]] | None:
    """(name, length_bp, offset, line_bases, line_bytes) rows, or None when the file is not a valid index."""
    try:
        text = fai.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    fields = text.replace("\r", "").replace("\n", "\t").split("\t")
    if fields and fields[-1] == "":
        fields.pop()
    if fields and len(fields) == 5 * len(text.splitlines()):
        # the usual five columns: parsed column by column (a million-contig index has five million numbers)
        try:
            numbers = np.array([fields[k::5] for k in range(1, 5)], dtype=np.int64)  # (4, contigs)
        except (ValueError, OverflowError):
            return None
        if numbers.size and (numbers.min() < 0 or (numbers[3] < numbers[2]).any()):
            return None
        return list(zip(fields[0::5], *(column.tolist() for column in numbers)))
    rows = []
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
    if size == 0:
        return "the FASTA is empty"
    # a memory map, not a read per record: a genome of a million small contigs is a million records
    with open(fasta, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        previous_end, previous_name = 0, None
        for name, length_bp, offset, line_bases, line_bytes in sorted(rows, key=lambda r: r[2]):
            problem = _gap_problem(data, previous_end, offset, name, previous_name)
            if problem:
                return problem
            end = offset
            if line_bases:
                full_lines, rest = divmod(length_bp, line_bases)
                end = offset + full_lines * line_bytes + rest
                if end > size:
                    return f"its length for contig {name!r} runs past the end of the FASTA"
                after = data[end : end + 1]
                if rest and after not in (b"", b"\n", b"\r"):
                    return f"its length for contig {name!r} disagrees with the FASTA"
                if not rest and after not in (b"", b">", b"\n", b"\r"):
                    return f"its length for contig {name!r} disagrees with the FASTA"
            previous_end, previous_name = end, name
        if data[previous_end : previous_end + MAX_GAP_BYTES].strip() or size - previous_end > MAX_GAP_BYTES:
            return f"it lists fewer contigs than the FASTA (there is more after contig {previous_name!r})"
    return None


def _gap_problem(data, start: int, offset: int, name: str, previous_name: str | None) -> str | None:
    """What is wrong with bytes [start, offset) of the FASTA, between the previous record's sequence and this
    one's: they must hold line ends and one header line, this contig's (';' comment lines may come before the
    first record); anything more is a record the index does not list."""
    if offset - start > MAX_GAP_BYTES:
        lines = None
    else:
        gap = data[start:offset]
        body = gap.lstrip(b"\r\n")
        header = b">" + name.encode()
        if (body.startswith(header) and body[len(header) : len(header) + 1] in (b" ", b"\t", b"\r", b"\n")
                and body.count(b"\n") == 1 and body.endswith(b"\n") and b">" not in body[1:]):
            return None  # the usual layout, checked without splitting lines
        lines = [line for line in gap.splitlines() if line.strip()]
    head = data[max(0, offset - 4096) : offset].rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
    if not head.startswith(b">" + name.encode()):
        return f"its offset for contig {name!r} does not point just after that contig's header"
    headers = [line for line in lines if line.startswith(b">")] if lines is not None else []
    if lines is None or len(headers) != 1 or any(not line.startswith((b">", b";")) for line in lines):
        after = f"after contig {previous_name!r}" if previous_name else "before its first contig"
        return f"it lists fewer contigs than the FASTA (a record {after} is missing from it)"
    return None
