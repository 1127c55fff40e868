"""A genome on disk: any FASTA (plain, gzip, bgzip), GenBank, EMBL or MAF, read through a pyfaidx index.

Nothing is loaded into memory. The file handle is opened lazily in the process that reads, so a Genome can be
pickled into DataLoader workers and each worker gets its own handle.

Where derived files go (see mambadna.data.cache):
- ``.fai``/``.gzi`` next to the FASTA when that folder is writable, else in ``<cache>/index/``.
- A user's existing ``.fai`` that is corrupt, stale (older than the FASTA) or disagrees with the FASTA is left
  untouched: a fresh index is built in ``<cache>/index/`` and a DataWarning says so.
- Plain gzip, GenBank, EMBL and MAF are converted once to ``<cache>/converted/`` (see convert.py).
- A FASTA pyfaidx cannot index in place (lines of unequal length within a contig, blank lines, mixed line
  endings, as concatenated files often have) is normalised once to ``<cache>/normalized/`` with a DataWarning
  (see normalize.py; ``mambadna normalize IN OUT`` writes such a copy where the user wants it).
- Per-contig length / N / soft-masked counts are computed in one pass and kept in ``<cache>/stats/*.json``; the
  same pass rejects letters that are not DNA, naming the contig and the 0-based offset.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import warnings
import zlib
from collections import OrderedDict, namedtuple
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mambadna.data.cache import (atomic_write_target, cached_path, derived_write_error, file_key, is_writable_dir,
                                 path_key, writing_derived)
from mambadna.data.convert import converted_fasta
from mambadna.data.errors import DataError, DataWarning
from mambadna.data.fai import fai_problem, read_fai
from mambadna.data.formats import is_bgzf, sniff_format
from mambadna.data.normalize import normalize_fasta

DNA_LETTERS = b"ACGTNRYKMSWBDHV"  # the tokenizer contract: IUPAC ambiguity codes read as N
N_LETTERS = b"NRYKMSWBDHV"
_VALID = np.zeros(256, dtype=bool)
_VALID[np.frombuffer(DNA_LETTERS + DNA_LETTERS.lower(), dtype=np.uint8)] = True
_IS_N = np.zeros(256, dtype=bool)
_IS_N[np.frombuffer(N_LETTERS + N_LETTERS.lower(), dtype=np.uint8)] = True
_IS_LOWER = np.zeros(256, dtype=bool)
_IS_LOWER[np.frombuffer(DNA_LETTERS.lower(), dtype=np.uint8)] = True
STATS_CHUNK_BP = 1 << 24
STATS_VERSION = 2
# a first pass over a genome this large (or of this many contigs) says what it is doing
PROGRESS_BYTES = 256 << 20
PROGRESS_CONTIGS = 100_000


def progress(message: str) -> None:
    """A line on stderr for one-time work that takes a while (indexing, the first pass over a big genome)."""
    print(f"{message} ...", file=sys.stderr, flush=True)


_Record = namedtuple("_Record", "rlen offset lenc lenb")  # the fields of pyfaidx's index records fetch reads


@dataclass(frozen=True)
class ContigStats:
    length_bp: int
    n_bp: int
    soft_masked_bp: int

    @property
    def n_fraction(self) -> float:
        return self.n_bp / self.length_bp if self.length_bp else 1.0


class Genome:
    """Random access to the contigs of one genome file.

    ``Genome(path).fetch(contig, start_bp, end_bp) -> bytes`` (0-based, half-open). ``contigs`` maps name to
    length in order of the file; ``stats`` adds N and soft-masked counts (one pass, cached on disk).
    ``validate=True`` runs that pass at open, so a non-DNA letter is reported before training starts.
    """

    def __init__(self, path: str | os.PathLike, validate: bool = True):
        self.source_path = Path(path).expanduser()
        if not self.source_path.exists():
            raise DataError(f"{self.source_path}: no such file")
        if not self.source_path.is_file():
            raise DataError(f"{self.source_path}: not a file")
        if self.source_path.stat().st_size == 0:
            raise DataError(f"{self.source_path}: the file is empty (no FASTA records)")
        self.format = sniff_format(self.source_path)
        self._checked_fai: Path | None = None  # an existing index already found consistent with the FASTA
        self.fasta_path, self.compressed = self._indexable_fasta()
        self.fai_path, self.gzi_path = self._index_paths()
        self._records = self._checked_records()
        if self._records is None:
            faidx = self._open_or_normalize()
            self._records = OrderedDict((name, rec) for name, rec in faidx.index.items())
            faidx.close()
        self.contigs: OrderedDict[str, int] = OrderedDict((n, int(r.rlen)) for n, r in self._records.items())
        if sum(self.contigs.values()) == 0:
            raise DataError(f"{self.source_path}: every record is empty (headers but no sequence)")
        self._stats: dict[str, ContigStats] | None = None
        # the train/val/test splits of this genome by their settings (mambadna.data.windows.split_intervals): a
        # run builds its datasets several times (each held-out check, each warmup stage), the split once
        self.split_cache: dict[tuple, dict] = {}
        self._handle = None
        self._handle_pid = None
        if validate:  # the one pass both caches the counts and rejects non-DNA letters
            self._stats = self._load_or_compute_stats()

    def __repr__(self) -> str:
        return f"Genome({str(self.source_path)!r}, {len(self.contigs)} contigs, {self.total_bp} bp)"

    @property
    def total_bp(self) -> int:
        return sum(self.contigs.values())

    @property
    def name(self) -> str:
        return self.source_path.name

    def _indexable_fasta(self) -> tuple[Path, bool]:
        path = self.source_path
        if self.format == "fasta":
            if is_bgzf(path) and path.name.lower().endswith((".gz", ".bgz")):
                return path, True
            with open(path, "rb") as fh:
                gz = fh.read(2) == b"\x1f\x8b"
            if not gz:
                return path, False
        return converted_fasta(path, self.format), False

    def _index_paths(self) -> tuple[Path, Path | None]:
        fasta = self.fasta_path
        gzi = Path(str(fasta) + ".gzi") if self.compressed else None
        beside = Path(str(fasta) + ".fai")
        in_cache = Path(cached_path("index", path_key(fasta), fasta.name + ".fai"))
        cache_gzi = Path(str(in_cache)[: -len(".fai")] + ".gzi") if self.compressed else None
        if beside.exists():
            problem = None if _checked_before(beside, fasta) else fai_problem(beside, fasta, self.compressed)
            if problem is None and (gzi is None or gzi.exists()):
                self._checked_fai = beside
                _remember_checked(beside, fasta)
                return beside, gzi
            if problem is not None:
                warnings.warn(f"{beside}: {problem}; leaving it untouched and building a fresh index in {in_cache} "
                              "(delete or rebuild it with `samtools faidx` to silence this)", DataWarning,
                              stacklevel=3)
                return in_cache, cache_gzi
        if is_writable_dir(fasta.parent):
            return beside, gzi
        return in_cache, cache_gzi

    def _checked_records(self) -> OrderedDict | None:
        """A plain FASTA's index records read without pyfaidx, when the index is one found consistent with the
        FASTA (pyfaidx's parser takes seconds on a million contigs); None to go through pyfaidx."""
        if self.compressed or self._checked_fai != self.fai_path:
            return None
        rows = read_fai(self.fai_path)
        if rows is None or len({row[0] for row in rows}) != len(rows):
            return None  # pyfaidx names what is wrong
        return OrderedDict((name, _Record(length, offset, line_bases, line_bytes))
                           for name, length, offset, line_bases, line_bytes in rows)

    def _open_or_normalize(self):
        existed = self.fai_path.exists()
        if not existed and self.fasta_path.stat().st_size > PROGRESS_BYTES:
            progress(f"indexing {self.fasta_path} ({self.fasta_path.stat().st_size / 2**20:,.0f} MiB), once")
        try:
            faidx = self._open_faidx()
        except _NotIndexableInPlace as exc:
            reason = exc.reason
        else:
            # pyfaidx also accepts some layouts it then reads wrongly (a last line longer than the others); an
            # index checked a moment ago in _index_paths is not checked twice
            checked = self.compressed or (existed and self.fai_path == self._checked_fai)
            reason = None if checked else fai_problem(self.fai_path, self.fasta_path, False, check_age=False)
            if reason is None:
                if not self.compressed:
                    _remember_checked(self.fai_path, self.fasta_path)
                return faidx
            faidx.close()
            self._discard_new_index(existed)
        self._use_normalized_copy(reason)
        try:
            return self._open_faidx()
        except _NotIndexableInPlace as exc:
            raise DataError(f"{self.source_path}: pyfaidx cannot index it even after normalising ({exc.reason})")

    def _use_normalized_copy(self, reason: str) -> None:
        """Point this Genome at a normalised copy in the cache (made once per version of the file)."""
        out = cached_path("normalized", file_key(self.source_path), Path(self.source_path.name).stem + ".fa")
        if not out.exists():
            warnings.warn(f"{self.source_path} cannot be indexed in place ({reason}); normalising it once to {out} "
                          f"(your file is not changed; `mambadna normalize {self.source_path} fixed.fa` writes such "
                          "a copy where you want it)", DataWarning, stacklevel=4)
            with writing_derived("normalised copy", self.source_path):
                normalize_fasta(self.fasta_path if not self.compressed else self.source_path, out)
        self.fasta_path, self.compressed = out, False
        self.fai_path, self.gzi_path = self._index_paths()

    def _open_faidx(self):
        import pyfaidx

        existed = self.fai_path.exists()
        kwargs = dict(indexname=str(self.fai_path), as_raw=True, strict_bounds=True)
        if self.gzi_path is not None:
            kwargs["gzi_indexname"] = str(self.gzi_path)
        try:
            return pyfaidx.Faidx(str(self.fasta_path), **kwargs)
        except pyfaidx.FastaIndexingError as exc:
            self._discard_new_index(existed)
            text = str(exc)
            if "does not contain a valid sequence" in text:
                raise DataError(f"{self.source_path}: no FASTA record (no line starting with '>')") from exc
            if "Line length" in text or "Unexpected text" in text:
                raise _NotIndexableInPlace(text.strip()) from exc
            raise DataError(f"{self.source_path}: pyfaidx cannot index it ({text.strip()})") from exc
        except ValueError as exc:
            self._discard_new_index(existed)
            if "Duplicate key" in str(exc):
                name = str(exc).split('"')[1] if '"' in str(exc) else "?"
                raise DataError(f"{self.source_path}: contig name {name!r} appears more than once; contig names "
                                "(the header up to the first space) must be unique") from exc
            raise DataError(f"{self.source_path}: pyfaidx cannot index it ({exc})") from exc
        except (OSError, EOFError, struct.error, zlib.error) as exc:
            self._discard_new_index(existed)
            full = derived_write_error(exc, "index", self.source_path) if isinstance(exc, OSError) else None
            if full is not None:
                raise full from None
            if self.compressed:
                reason = str(exc) or type(exc).__name__
                raise DataError(f"{self.source_path}: the bgzip file is truncated or damaged ({reason}); download it "
                                "again or recompress it with `bgzip`") from exc
            raise DataError(f"{self.source_path}: cannot read or index it ({exc})") from exc

    def _discard_new_index(self, existed_before: bool) -> None:
        """An index pyfaidx half-wrote for a file it then rejected would only mislead the next attempt."""
        if not existed_before and self.fai_path.exists():
            self.fai_path.unlink()

    # Reading ---------------------------------------------------------------------------------------------

    def __getstate__(self):
        state = self.__dict__.copy()
        state["split_cache"] = {}  # a worker gets its dataset's intervals; the cache would only be copied along
        state["_handle"] = None
        state["_handle_pid"] = None
        return state

    def _reader(self):
        if self._handle is None or self._handle_pid != os.getpid():
            if self.compressed:
                self._handle = self._open_faidx()
            else:
                self._handle = os.open(self.fasta_path, os.O_RDONLY)
            self._handle_pid = os.getpid()
        return self._handle

    def close(self) -> None:
        if self._handle is not None and self._handle_pid == os.getpid():
            if self.compressed:
                self._handle.close()
            else:
                os.close(self._handle)
        self._handle = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: os/pyfaidx may already be gone
            pass

    def check_region(self, contig: str, start_bp: int, end_bp: int) -> None:
        if contig not in self.contigs:
            raise DataError(f"{self.source_path}: no contig {contig!r} (contigs: {_preview(self.contigs)})")
        if not 0 <= start_bp <= end_bp <= self.contigs[contig]:
            raise DataError(f"{self.source_path}: region {contig}:{start_bp}-{end_bp} is outside the contig "
                            f"(length {self.contigs[contig]} bp; coordinates are 0-based half-open)")

    def fetch(self, contig: str, start_bp: int, end_bp: int) -> bytes:
        """Bases ``[start_bp, end_bp)`` of ``contig`` as bytes, case preserved."""
        rec = self._records.get(contig)
        if rec is None or not 0 <= start_bp <= end_bp <= rec.rlen:
            self.check_region(contig, start_bp, end_bp)
        if start_bp == end_bp:
            return b""
        handle = self._reader()
        if self.compressed:
            try:
                return handle.from_file(contig, start_bp + 1, end_bp).encode("ascii")
            except ValueError as exc:
                # Biopython's BgzfWriter fills blocks to 65,536 bytes (htslib's bgzip to 65,280): a read that starts
                # exactly at the end of such a block asks Bio.bgzf for offset 65,536 inside it, which it refuses.
                # One base earlier lies inside the block; the file is fine
                if "within_block_offset" in str(exc) and start_bp > 0:
                    return self.fetch(contig, start_bp - 1, end_bp)[1:]
                raise DataError(f"{self.source_path}: reading {contig}:{start_bp}-{end_bp} failed ({exc}); the bgzip "
                                "file is truncated or damaged: download it again or recompress it with `bgzip`"
                                ) from exc
            except (OSError, EOFError, struct.error, zlib.error) as exc:
                raise DataError(f"{self.source_path}: reading {contig}:{start_bp}-{end_bp} failed ({exc}); the bgzip "
                                "file is truncated or damaged: download it again or recompress it with `bgzip`"
                                ) from exc
        lenc, lenb = rec.lenc, rec.lenb
        first = rec.offset + (start_bp // lenc) * lenb + start_bp % lenc
        last = rec.offset + (end_bp // lenc) * lenb + end_bp % lenc
        raw = os.pread(handle, last - first, first)
        return raw.translate(None, b"\r\n") if lenb != lenc else raw

    # Statistics ------------------------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, ContigStats]:
        """{contig: ContigStats}; one pass over the sequence the first time, then read from the sidecar JSON."""
        if self._stats is None:
            self._stats = self._load_or_compute_stats()
        return self._stats

    def _stats_path(self) -> Path:
        return cached_path("stats", file_key(self.source_path), self.source_path.name + ".json")

    def _load_or_compute_stats(self) -> dict[str, ContigStats]:
        path = self._stats_path()
        if path.exists():
            try:
                data = json.loads(path.read_text())
                if data.get("version") == STATS_VERSION and data["names"] == list(self.contigs):
                    return {name: ContigStats(*counts) for name, counts in
                            zip(data["names"], zip(data["length_bp"], data["n_bp"], data["soft_masked_bp"]))}
            except (ValueError, KeyError, TypeError):
                pass  # a damaged sidecar is only a cache: recompute it
        if len(self.contigs) >= PROGRESS_CONTIGS or self.total_bp >= PROGRESS_BYTES:
            progress(f"checking the {len(self.contigs):,} contigs ({self.total_bp:,} bp) of {self.source_path} for "
                     "non-DNA letters, once (the counts are cached)")
        stats = self._scan_all()
        tmp = atomic_write_target(path)
        # one list per column: a million contigs load in a fraction of the time a dict per contig takes
        with writing_derived("per-contig counts", self.source_path):
            tmp.write_text(json.dumps({"version": STATS_VERSION, "source": str(self.source_path.resolve()),
                                       "names": list(stats), **{key: [getattr(s, key) for s in stats.values()]
                                                                for key in ("length_bp", "n_bp", "soft_masked_bp")}}))
            os.replace(tmp, path)
        return stats

    def _scan_all(self) -> dict[str, ContigStats]:
        """Every contig's counts: small contigs of a plain FASTA many at a time (one read, whole-array numpy), the
        others one by one."""
        stats: dict[str, ContigStats] = {}
        group: list[str] = []
        group_bytes = 0
        for name, rec in self._records.items():
            if self.compressed or rec.rlen >= STATS_CHUNK_BP:
                stats[name] = self._scan_contig(name)
                continue
            group.append(name)
            group_bytes += self._end_offset(rec) - rec.offset
            if group_bytes >= STATS_CHUNK_BP:
                stats.update(self._scan_group(group))
                group, group_bytes = [], 0
        stats.update(self._scan_group(group))
        return {name: stats[name] for name in self.contigs}

    @staticmethod
    def _end_offset(rec) -> int:
        """File offset just after the last base of a record of a plain FASTA."""
        full_lines, rest = divmod(int(rec.rlen), int(rec.lenc)) if rec.lenc else (0, 0)
        return int(rec.offset) + full_lines * int(rec.lenb) + rest

    def _scan_group(self, names: list[str]) -> dict[str, ContigStats]:
        """`_scan_contig` for consecutive records of a plain FASTA, from one read of the bytes they span."""
        if not names:
            return {}
        recs = [self._records[n] for n in names]
        if any(int(b.offset) < self._end_offset(a) for a, b in zip(recs, recs[1:])):
            return {name: self._scan_contig(name) for name in names}  # not in file order: no shared span
        base = int(recs[0].offset)
        starts = np.array([int(r.offset) - base for r in recs], dtype=np.int64)
        ends = np.array([self._end_offset(r) - base for r in recs], dtype=np.int64)
        data = np.frombuffer(os.pread(self._reader(), int(ends[-1]), base), dtype=np.uint8)
        edges = np.zeros(len(data) + 1, dtype=np.int32)
        edges[starts] += 1
        edges[ends] -= 1
        inside = np.cumsum(edges[:-1]) > 0  # bytes of some record's sequence lines (line ends included)
        line_end = (data == 10) | (data == 13)
        if (inside & ~_VALID[data] & ~line_end).any():  # the one-by-one pass names the contig and offset
            return {name: self._scan_contig(name) for name in names}

        def per_record(mask):
            total = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
            return (total[ends] - total[starts]).tolist()

        n_bp, lower_bp = per_record(inside & _IS_N[data]), per_record(inside & _IS_LOWER[data])
        return {name: ContigStats(int(rec.rlen), n, low) for name, rec, n, low in zip(names, recs, n_bp, lower_bp)}

    def _scan_contig(self, name: str) -> ContigStats:
        length_bp = self.contigs[name]
        n_bp = lower_bp = 0
        for start in range(0, length_bp, STATS_CHUNK_BP):
            chunk = np.frombuffer(self.fetch(name, start, min(start + STATS_CHUNK_BP, length_bp)), dtype=np.uint8)
            bad = ~_VALID[chunk]
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                letter = chr(chunk[i])
                raise DataError(f"{self.source_path}: contig {name!r} has a non-DNA letter {letter!r} at offset "
                                f"{start + i} (0-based); allowed are ACGTN, IUPAC ambiguity codes and their "
                                "lowercase (soft-masked) forms")
            n_bp += int(_IS_N[chunk].sum())
            lower_bp += int(_IS_LOWER[chunk].sum())
        return ContigStats(length_bp=length_bp, n_bp=n_bp, soft_masked_bp=lower_bp)


def _checked_mark(fai: Path, fasta: Path) -> Path:
    """A cache entry saying "this index was found consistent with this FASTA"; both files' path, mtime and size
    are in its name, so any change to either makes it a different entry."""
    return cached_path("checked", f"{file_key(fasta)}-{file_key(fai)}", "fai-ok")


def _checked_before(fai: Path, fasta: Path) -> bool:
    try:
        return _checked_mark(fai, fasta).exists() and fai.stat().st_mtime >= fasta.stat().st_mtime
    except (OSError, DataError):
        return False


def _remember_checked(fai: Path, fasta: Path) -> None:
    """Checking an index reads every record's header: done once per version of the files, not every open."""
    try:
        _checked_mark(fai, fasta).touch()
    except (OSError, DataError):
        pass  # only a shortcut


class _NotIndexableInPlace(DataError):
    """pyfaidx refused the layout; a normalised copy will do."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _preview(names, limit: int = 5) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
