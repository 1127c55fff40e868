"""Genomic intervals: BED input, train/val/test splits, and intersecting the two.

Splits never overlap, so windows drawn inside one split can never overlap windows of another:
- by contig name (``val_contigs``/``test_contigs``, or ``by="contig"``: whole contigs are assigned by a stable
  hash of their name until each held-out split holds its fraction of the bases);
- by coordinate blocks (``by="block"``, the default for genomes of fewer than ``CONTIG_SPLIT_MIN`` contigs):
  every contig is cut at fixed fractions into a train block, then a val block, then a test block.
The split depends only on the genome and the fractions, never on ``window_bp``, so changing the window length
between epochs cannot leak held-out bases into training.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mambadna.data.errors import DataError

SPLITS = ("train", "val", "test")
CONTIG_SPLIT_MIN = 20


class Interval(NamedTuple):
    """A half-open region [start_bp, end_bp) of a contig; a tuple, since a genome may have millions of them."""

    contig: str
    start_bp: int
    end_bp: int

    @property
    def length_bp(self) -> int:
        return self.end_bp - self.start_bp


def read_bed(path: str | Path, contigs: dict[str, int] | None = None) -> list[Interval]:
    """BED intervals (first three columns; header/track/comment lines skipped), checked against ``contigs``,
    merged where they overlap (the regions windows are drawn from)."""
    intervals = [interval for interval, _ in bed_lines(path, contigs)]
    if not intervals:
        raise DataError(f"{path}: no intervals in the BED file")
    return merge(intervals)


def read_bed_regions(path: str | Path, contigs: dict[str, int] | None = None) -> list[tuple[Interval, str, str]]:
    """Every BED line as (interval, name, strand), in file order and unmerged (regions to embed one by one): the
    name is column 4 or "contig:start-end", the strand column 6 ("+" when absent)."""
    regions = []
    for interval, fields in bed_lines(path, contigs):
        name = fields[3] if len(fields) > 3 and fields[3] not in ("", ".") else \
            f"{interval.contig}:{interval.start_bp}-{interval.end_bp}"
        strand = fields[5] if len(fields) > 5 and fields[5] in ("+", "-") else "+"
        regions.append((interval, name, strand))
    if not regions:
        raise DataError(f"{path}: no intervals in the BED file")
    return regions


def bed_lines(path: str | Path, contigs: dict[str, int] | None = None):
    """(Interval, all fields) of each BED line, checked; raises DataError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such BED file")
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 3:
            raise DataError(f"{path}: line {line_no}: a BED line needs at least 3 columns (contig, start, end)")
        try:
            start_bp, end_bp = int(fields[1]), int(fields[2])
        except ValueError as exc:
            raise DataError(f"{path}: line {line_no}: start/end are not integers: {line[:80]!r}") from exc
        contig = fields[0]
        if not 0 <= start_bp <= end_bp:
            raise DataError(f"{path}: line {line_no}: need 0 <= start <= end, got {start_bp}-{end_bp}")
        if contigs is not None:
            if contig not in contigs:
                raise DataError(f"{path}: line {line_no}: contig {contig!r} is not in the genome")
            if end_bp > contigs[contig]:
                raise DataError(f"{path}: line {line_no}: end {end_bp} is past the end of {contig!r} "
                                f"({contigs[contig]} bp)")
        yield Interval(contig, start_bp, end_bp), fields


def merge(intervals: list[Interval]) -> list[Interval]:
    """Sorted, with overlapping intervals of one contig merged. Touching ones stay apart: a BED of adjacent
    blocks (e.g. alignment blocks) means "windows must not cross these boundaries"."""
    out: list[Interval] = []
    for iv in sorted(intervals):
        if out and out[-1].contig == iv.contig and iv.start_bp < out[-1].end_bp:
            last = out.pop()
            iv = Interval(iv.contig, last.start_bp, max(last.end_bp, iv.end_bp))
        out.append(iv)
    return out


def intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """Bases covered by both lists (each merged first)."""
    by_contig: dict[str, list[Interval]] = {}
    for iv in merge(b):
        by_contig.setdefault(iv.contig, []).append(iv)
    out = []
    for iv in merge(a):
        for other in by_contig.get(iv.contig, ()):
            lo, hi = max(iv.start_bp, other.start_bp), min(iv.end_bp, other.end_bp)
            if lo < hi:
                out.append(Interval(iv.contig, lo, hi))
    return out


def split_regions(contigs: dict[str, int], val_fraction: float = 0.1, test_fraction: float = 0.1,
                  by: str = "auto", val_contigs=None, test_contigs=None) -> dict[str, list[Interval]]:
    """{"train", "val", "test"} -> disjoint intervals covering the genome (see the module docstring)."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"val_fraction + test_fraction must be in [0, 1), got {val_fraction} + {test_fraction}")
    if by not in ("auto", "contig", "block"):
        raise DataError(f"split by must be 'auto', 'contig' or 'block', got {by!r}")
    if val_contigs is not None or test_contigs is not None:
        return _split_by_names(contigs, list(val_contigs or ()), list(test_contigs or ()))
    if by == "auto":
        by = "contig" if len(contigs) >= CONTIG_SPLIT_MIN else "block"
    if by == "contig":
        return _split_by_hash(contigs, val_fraction, test_fraction)
    out: dict[str, list[Interval]] = {s: [] for s in SPLITS}
    for name, length_bp in contigs.items():
        train_end = round(length_bp * (1 - val_fraction - test_fraction))
        val_end = round(length_bp * (1 - test_fraction))
        for split, lo, hi in (("train", 0, train_end), ("val", train_end, val_end), ("test", val_end, length_bp)):
            if hi > lo:
                out[split].append(Interval(name, lo, hi))
    return out


def held_out_advice(split: str, read_bp: int, contig_lengths, val_fraction: float, test_fraction: float,
                    split_by: str, manifest: bool = False) -> str:
    """How to make a window of `read_bp` fit the held-out split `split` (for the 'longer than every region'
    error): the settings that size the held-out blocks, and for species data the manifest's split column."""
    if split not in ("val", "test"):
        return ""
    fraction = val_fraction if split == "val" else test_fraction
    other = test_fraction if split == "val" else val_fraction
    lengths = list(contig_lengths)
    longest = max(lengths, default=0)
    if longest < read_bp:  # no split setting can help: only a shorter window
        return f"; no contig of the whole genome is that long either (the longest is {longest} bp): no split helps"
    by = split_by if split_by != "auto" else ("contig" if len(lengths) >= CONTIG_SPLIT_MIN else "block")
    need = math.ceil(100 * read_bp / longest) / 100
    ways = []
    if by == "block":
        if need + other < 1:
            ways.append(f"raise data.{split}_fraction to {need:g} or more (now {fraction:g} of each contig)")
        if len(lengths) > 1:
            ways.append("set data.split_by=contig to hold out whole contigs (for genomes of many contigs; now "
                        f"{split_by!r})")
    elif need + other < 1:  # whole contigs are held out, and the ones that were are all short
        ways.append(f"set data.split_by=block to cut every contig into train/val/test blocks, with "
                    f"data.{split}_fraction {max(need, fraction):g} (now whole contigs are held out: "
                    f"data.split_by={split_by!r})")
    if manifest:
        ways.append("or, best for several genomes (strains) per species, give whole genomes to val and test in the "
                    "manifest's split column (species<TAB>fasta<TAB>split, split = train, val or test)")
    return "; to fit it, " + ", ".join(ways) if ways else ""


def _split_by_names(contigs: dict[str, int], val: list[str], test: list[str]) -> dict[str, list[Interval]]:
    for name in val + test:
        if name not in contigs:
            raise DataError(f"held-out contig {name!r} is not in the genome (contigs: {', '.join(list(contigs)[:8])})")
    if set(val) & set(test):
        raise DataError(f"contigs {sorted(set(val) & set(test))} are in both val_contigs and test_contigs")
    held = set(val) | set(test)
    return {"train": [Interval(n, 0, l) for n, l in contigs.items() if n not in held],
            "val": [Interval(n, 0, contigs[n]) for n in val],
            "test": [Interval(n, 0, contigs[n]) for n in test]}


def _split_by_hash(contigs: dict[str, int], val_fraction: float, test_fraction: float) -> dict[str, list[Interval]]:
    # crc32 of the name, not Python's salted hash(): the same genome must split the same way in every process.
    # In (crc32, name) order, test takes contigs while it holds less than its share of the bases, then val does,
    # and train the rest; as prefix sums, whole arrays at a time (a genome may have millions of contigs).
    names = list(contigs)
    crc = np.fromiter((zlib.crc32(n.encode()) for n in names), dtype=np.int64, count=len(names))
    order = np.lexsort((np.array(names, dtype=object).astype(str), crc)) if names else np.zeros(0, dtype=np.int64)
    lengths = np.fromiter((contigs[n] for n in names), dtype=np.int64, count=len(names))[order]
    total = int(lengths.sum())
    held_before = np.cumsum(lengths) - lengths
    n_test = int(np.count_nonzero(held_before < test_fraction * total))  # a prefix: the sums only grow
    rest = lengths[n_test:]
    n_val = int(np.count_nonzero(np.cumsum(rest) - rest < val_fraction * total))
    cuts = {"test": (0, n_test), "val": (n_test, n_test + n_val), "train": (n_test + n_val, len(names))}
    ordered = [names[i] for i in order.tolist()]
    return {split: [Interval(name, 0, contigs[name]) for name in ordered[lo:hi]] for split, (lo, hi) in
            ((s, cuts[s]) for s in SPLITS)}
