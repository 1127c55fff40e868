"""Turning "a window somewhere in these regions" into (genome, contig, start) and then into token ids.

``RegionWindows`` numbers every valid window start in a list of regions (windows never cross a region's end),
so drawing k uniformly in [0, n_starts) is the length-weighted choice of contig followed by a uniform start.
``WindowReader`` fetches, checks the N fraction and encodes, with optional reverse-complement augmentation.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from mambadna.data.errors import DataError, WindowTooLong
from mambadna.data.genome import _IS_N, Genome
from mambadna.data.regions import Interval

# how many redraws stay inside the item's own stratum before falling back to the whole region list
STRATUM_TRIES = 8
MAX_TRIES = 64


class RegionWindows:
    """All starts of ``window_bp`` windows that fit inside the given regions of one or more genomes.

    ``lookahead_bp`` extra bases are read after each window (1 for next-base targets) and must fit too."""

    def __init__(self, parts: Sequence[tuple[Genome, list[Interval]]], window_bp: int, what: str = "region",
                 lookahead_bp: int = 0, advice: str = ""):
        if not isinstance(window_bp, (int, np.integer)) or isinstance(window_bp, bool) or window_bp < 1:
            raise DataError(f"window_bp must be a positive integer, got {window_bp!r}")
        self.window_bp = int(window_bp)
        self.read_bp = self.window_bp + int(lookahead_bp)
        window_bp = self.read_bp
        self.genomes = [g for g, _ in parts]
        self._intervals = [intervals for _, intervals in parts]
        # (part, index in its interval list) of every interval a window fits in, as arrays: a genome may have
        # millions of contigs, and a dataset is built several times a run
        lengths = [np.fromiter((iv.end_bp - iv.start_bp for iv in ivs), dtype=np.int64, count=len(ivs))
                   for ivs in self._intervals]
        longest = max((int(a.max()) for a in lengths if a.size), default=0)
        fits = [np.flatnonzero(a >= window_bp) for a in lengths]
        none = [np.zeros(0, dtype=np.int64)]
        self._part = np.concatenate([np.full(f.size, gi, dtype=np.int64) for gi, f in enumerate(fits)] or none)
        self._index = np.concatenate(fits or none)
        kept = np.concatenate([a[f] for a, f in zip(lengths, fits)] or none)
        if not kept.size:
            names = ", ".join(str(g.source_path) for g in self.genomes)
            plus = f"; a window reads {lookahead_bp} more base for its next-base target" if lookahead_bp else ""
            raise WindowTooLong(f"window_bp {self.window_bp} is longer than every {what} of {names} (the longest "
                            f"is {longest} bp{plus}); use a smaller window_bp{advice}")
        self._cum = np.cumsum(kept - self.read_bp + 1)
        self.n_starts = int(self._cum[-1])
        self.total_bp = int(kept.sum())

    def locate(self, k: int) -> tuple[Genome, str, int]:
        """The k-th window start (0 <= k < n_starts) as (genome, contig, start_bp)."""
        i = int(np.searchsorted(self._cum, k, side="right"))
        before = int(self._cum[i - 1]) if i else 0
        gi = int(self._part[i])
        iv = self._intervals[gi][int(self._index[i])]
        return self.genomes[gi], iv.contig, iv.start_bp + (int(k) - before)


class WindowReader:
    """Fetch a window, measure its N fraction, encode it and maybe reverse-complement it."""

    def __init__(self, tokenizer=None, max_n_fraction: float = 0.1, reverse_complement: bool = False):
        if not 0.0 <= max_n_fraction <= 1.0:
            raise DataError(f"max_n_fraction must be in [0, 1], got {max_n_fraction}")
        if tokenizer is None:
            from mambadna.tokenizer import NucleotideTokenizer

            tokenizer = NucleotideTokenizer()
        if reverse_complement and not hasattr(tokenizer, "reverse_complement"):
            raise DataError(f"reverse-complement augmentation needs a tokenizer with reverse_complement(); "
                            f"{type(tokenizer).__name__} has none")
        self.tokenizer = tokenizer
        self.max_n_fraction = max_n_fraction
        self.reverse_complement = reverse_complement

    def too_many_n(self, raw: bytes) -> bool:
        if self.max_n_fraction >= 1.0:
            return False
        n_bp = int(np.count_nonzero(_IS_N[np.frombuffer(raw, dtype=np.uint8)]))
        return n_bp > self.max_n_fraction * len(raw)

    def encode(self, raw: bytes, rng: np.random.Generator) -> torch.Tensor:
        ids = self.tokenizer.encode(raw)
        if self.reverse_complement and rng.random() < 0.5:
            ids = self.tokenizer.reverse_complement(ids)
        return torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))

    def draw(self, windows: RegionWindows, rng: np.random.Generator, lo: int, hi: int):
        """A window start drawn in [lo, hi) with at most ``max_n_fraction`` N, redrawing deterministically.

        After STRATUM_TRIES failures inside [lo, hi) the draw widens to all starts. Returns
        (genome, contig, start_bp, raw bytes).
        """
        for attempt in range(MAX_TRIES):
            if attempt < STRATUM_TRIES and hi > lo:
                k = lo + int(rng.integers(hi - lo))
            else:
                k = int(rng.integers(windows.n_starts))
            genome, contig, start = windows.locate(k)
            raw = genome.fetch(contig, start, start + windows.read_bp)
            if not self.too_many_n(raw):
                return genome, contig, start, raw
        raise DataError(f"no window of {windows.window_bp} bp with at most {self.max_n_fraction:.0%} N found in "
                        f"{MAX_TRIES} draws from {', '.join(str(g.source_path) for g in windows.genomes)}; the "
                        "regions are mostly N: raise max_n_fraction or choose other regions")
