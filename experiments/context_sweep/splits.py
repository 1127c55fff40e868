"""Train/val/test files for the context sweep: whole regions held out, the same regions in every species.

`mambadna finetune` reads a species manifest whose rows may carry a ``split`` column (train/val/test): such a row
goes wholly to that split. This module writes those rows: for each species, ``<species>.<split>.fa`` holding the
split's regions, one contig per maximal run of consecutive regions of that split (so a window never spans two
held-out regions, and never joins sequence that was not adjacent), and ``manifest.tsv`` listing them.

Regions ("runs") are consecutive stretches of the species' sequence:
- with a block BED (the great-apes alignment, data/prepare_great_apes.py): the alignment blocks are grouped, in
  order, into ``n_runs`` runs of about equal length in the reference species; run r holds the same block indices in
  every species, so a held-out run is the same orthologous chr22 sequence in all of them. No test window can overlap
  a training window in any species: they are drawn from disjoint sets of orthologous blocks (checked below).
- without one (separate genomes, e.g. the bacteria): each contig is cut into ``n_runs`` runs of equal length. The
  genomes are not aligned, so this only guarantees that no test window overlaps a training window *of the same
  genome*.

Assignment: runs listed in ``test_runs`` are test, ``val_runs`` val, the rest train. `write_block_splits` returns (and
writes to ``splits.json``) the block/coordinate ranges of every split, and `check_disjoint` verifies them.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test")
LINE_BP = 60


@dataclass
class SplitSpec:
    n_runs: int
    val_runs: tuple[int, ...]
    test_runs: tuple[int, ...]
    reference: str | None = None  # species whose block lengths define equal runs (default: the first)

    def __post_init__(self):
        runs = set(self.val_runs) | set(self.test_runs)
        if set(self.val_runs) & set(self.test_runs):
            raise ValueError(f"runs {sorted(set(self.val_runs) & set(self.test_runs))} are both val and test")
        if not runs <= set(range(self.n_runs)):
            raise ValueError(f"val/test runs must be in 0..{self.n_runs - 1}, got {sorted(runs)}")
        if len(runs) == self.n_runs:
            raise ValueError("no run is left for training")
        if not self.val_runs or not self.test_runs:
            raise ValueError("need at least one val run and one test run")

    def split_of(self, run: int) -> str:
        return "test" if run in self.test_runs else "val" if run in self.val_runs else "train"


@dataclass
class Species:
    name: str
    fasta: Path
    bed: Path | None = None
    extra: dict = field(default_factory=dict)


def read_manifest(path: Path) -> list[Species]:
    """``species<TAB>fasta[<TAB>bed]`` (paths relative to the manifest). A ``<fasta stem>.blocks.bed`` beside the
    FASTA is used when no bed column is given (data/prepare_great_apes.py writes them so)."""
    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            fasta = Path(row["fasta"])
            fasta = fasta if fasta.is_absolute() else path.parent / fasta
            bed = row.get("bed") or None
            if bed:
                bed = Path(bed) if Path(bed).is_absolute() else path.parent / bed
            else:
                stem = fasta.name.split(".")[0]
                guess = fasta.parent / f"{stem}.blocks.bed"
                bed = guess if guess.is_file() else None
            out.append(Species(row["species"], fasta, bed))
    if len({s.name for s in out}) != len(out):
        raise ValueError(f"{path}: one row per species expected (species names repeat)")
    return out


def read_fasta(path: Path) -> dict[str, str]:
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    records: dict[str, list[str]] = {}
    name = None
    with opener(path, "rt") as fh:
        for line in fh:
            if line.startswith(">"):
                name = line[1:].split()[0]
                records[name] = []
            elif name is not None:
                records[name].append(line.strip())
    return {k: "".join(v) for k, v in records.items()}


def _read_bed(path: Path) -> list[tuple[str, int, int, str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith(("#", "track", "browser")):
            f = line.split("\t")
            rows.append((f[0], int(f[1]), int(f[2]), f[3] if len(f) > 3 else ""))
    return rows


def _equal_runs(lengths: list[int], n_runs: int) -> list[int]:
    """Run index of each item, cutting the cumulative length into n_runs equal parts (items stay whole)."""
    total = sum(lengths)
    out, pos = [], 0
    for length in lengths:
        mid = pos + length / 2
        out.append(min(n_runs - 1, int(mid * n_runs / total)))
        pos += length
    return out


def _write_fasta(path: Path, contigs: list[tuple[str, str]]) -> None:
    with open(path, "w") as fa:
        for name, seq in contigs:
            fa.write(f">{name}\n")
            for i in range(0, len(seq), LINE_BP):
                fa.write(seq[i : i + LINE_BP] + "\n")


def _segments(items):
    """[(run, start, end, block index or None)] in order, all of one split -> maximal stretches of adjacent sequence
    in consecutive runs: [(first run, last run, start, end, [block indices])]."""
    out: list[list] = []
    for run, start, end, idx in items:
        if out and run - out[-1][1] in (0, 1) and out[-1][3] == start:
            out[-1][1], out[-1][3] = run, end
        else:
            out.append([run, run, start, end, []])
        if idx is not None:
            out[-1][4].append(idx)
    return [tuple(x) for x in out]


def write_block_splits(species: list[Species], spec: SplitSpec, out: Path) -> dict:
    """Write ``<species>.<split>.fa`` + ``manifest.tsv`` + ``splits.json`` into out; returns the splits.json dict."""
    out.mkdir(parents=True, exist_ok=True)
    with_bed = [s.bed is not None for s in species]
    if any(with_bed) and not all(with_bed):
        raise ValueError("either every species has a block BED or none has")
    info: dict = {"n_runs": spec.n_runs, "val_runs": list(spec.val_runs), "test_runs": list(spec.test_runs),
                  "aligned_blocks": all(with_bed), "species": {}}
    if all(with_bed):
        beds = {s.name: _read_bed(s.bed) for s in species}
        counts = {name: len(rows) for name, rows in beds.items()}
        if len(set(counts.values())) != 1:
            raise ValueError(f"block BEDs differ in block count: {counts}")
        names = {name: [r[3] for r in rows] for name, rows in beds.items()}
        first = next(iter(names.values()))
        if any(n != first for n in names.values()):
            raise ValueError("block BEDs name their blocks differently: blocks must be the same, in the same order")
        ref = spec.reference or species[0].name
        run_of_block = _equal_runs([e - s for _, s, e, _ in beds[ref]], spec.n_runs)
        info["reference"] = ref
    for sp in species:
        seqs = read_fasta(sp.fasta)
        per_split: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
        ranges: dict[str, list] = {s: [] for s in SPLITS}
        if all(with_bed):
            items_by_contig: dict[str, list[tuple[int, int, int, int]]] = {}
            for i, (contig, start, end, _) in enumerate(beds[sp.name]):
                items_by_contig.setdefault(contig, []).append((run_of_block[i], start, end, i))
            blocks = info.setdefault("blocks", {}).setdefault(sp.name, {s: [] for s in SPLITS})
            for contig, items in items_by_contig.items():
                for split in SPLITS:
                    mine = [item for item in items if spec.split_of(item[0]) == split]
                    for first_run, last_run, start, end, idx in _segments(mine):
                        name = f"{split}_runs{first_run}-{last_run}"
                        per_split[split].append((name, seqs[contig][start:end]))
                        ranges[split].append({"contig": name, "source": contig, "start": start, "end": end,
                                              "blocks": [min(idx), max(idx)]})
                        blocks[split].extend(idx)
        else:
            for contig, seq in seqs.items():
                n = len(seq)
                bounds = [round(n * r / spec.n_runs) for r in range(spec.n_runs + 1)]
                for split in SPLITS:
                    mine = [(r, bounds[r], bounds[r + 1], None) for r in range(spec.n_runs) if spec.split_of(r) == split]
                    for first_run, last_run, start, end, _ in _segments(mine):
                        name = f"{contig}_{split}_runs{first_run}-{last_run}"
                        per_split[split].append((name, seq[start:end]))
                        ranges[split].append({"contig": name, "source": contig, "start": start, "end": end})
        entry = {}
        for split in SPLITS:
            file = out / f"{sp.name}.{split}.fa"
            _write_fasta(file, per_split[split])
            entry[split] = {"file": file.name, "bp": sum(len(s) for _, s in per_split[split]),
                            "contigs": ranges[split]}
        info["species"][sp.name] = entry
    manifest = ["species\tfasta\tsplit\n"]
    for sp in species:
        for split in SPLITS:
            manifest.append(f"{sp.name}\t{sp.name}.{split}.fa\t{split}\n")
    (out / "manifest.tsv").write_text("".join(manifest))
    check_disjoint(info)
    (out / "splits.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def check_disjoint(info: dict) -> None:
    """Raise if any two splits share sequence: the same coordinates of one genome, or (aligned blocks) the same
    block index in any two species."""
    for name, entry in info["species"].items():
        spans = sorted((c["source"], c["start"], c["end"], split) for split in SPLITS for c in entry[split]["contigs"])
        for a, b in zip(spans, spans[1:]):
            if a[0] == b[0] and b[1] < a[2]:
                raise AssertionError(f"{name}: {a[3]} {a[:3]} overlaps {b[3]} {b[:3]}")
    if info.get("aligned_blocks"):
        sets = {split: set() for split in SPLITS}
        for name, per in info["blocks"].items():
            for split in SPLITS:
                sets[split] |= set(per[split])
            for split in SPLITS:  # every species must hold the same blocks in each split
                first = next(iter(info["blocks"].values()))[split]
                if per[split] != first:
                    raise AssertionError(f"{name}: the {split} blocks differ from the other species'")
        for a in SPLITS:
            for b in SPLITS:
                if a < b and sets[a] & sets[b]:
                    raise AssertionError(f"blocks {sorted(sets[a] & sets[b])[:5]} are in both {a} and {b}")


def write_pretrain_genome(split_dir: Path, species: list[str], out: Path) -> Path:
    """One FASTA holding the training contigs of ``species`` (names prefixed ``<species>__``), to pretrain on."""
    contigs = []
    for name in species:
        for contig, seq in read_fasta(split_dir / f"{name}.train.fa").items():
            contigs.append((f"{name}__{contig}", seq))
    _write_fasta(out, contigs)
    return out


def write_contig_splits(species: list[Species], val_contigs: list[str], test_contigs: list[str], out: Path,
                        drop_suffixes: tuple[str, ...] = ("_alt", "_fix")) -> dict:
    """Whole assemblies, whole chromosomes held out: ``<species>.<split>.fa`` by contig name, streamed (a genome is
    never held in memory). A contig named ``<held-out name>_...`` (hg38's ``chr8_KI270821v1_alt``) or ending in
    one of ``drop_suffixes`` (alternate haplotypes, patches: copies of other contigs) goes to no split."""
    import gzip

    out.mkdir(parents=True, exist_ok=True)
    held = {**{c: "val" for c in val_contigs}, **{c: "test" for c in test_contigs}}
    info: dict = {"val_contigs": list(val_contigs), "test_contigs": list(test_contigs), "species": {}}
    for sp in species:
        handles = {split: open(out / f"{sp.name}.{split}.fa", "w") for split in SPLITS}
        counts = {split: 0 for split in SPLITS}
        seen, dropped, dest = set(), [], None
        opener = gzip.open if sp.fasta.name.endswith(".gz") else open
        with opener(sp.fasta, "rt") as fh:
            for line in fh:
                if line.startswith(">"):
                    name = line[1:].split()[0]
                    seen.add(name)
                    if name in held:
                        dest = held[name]
                    elif name.endswith(drop_suffixes) or any(name.startswith(h + "_") for h in held):
                        dest = None
                        dropped.append(name)
                    else:
                        dest = "train"
                    if dest:
                        handles[dest].write(line)
                elif dest:
                    handles[dest].write(line)
                    counts[dest] += len(line.strip())
        for h in handles.values():
            h.close()
        missing = [c for c in held if c not in seen]
        if missing:
            raise ValueError(f"{sp.fasta}: no contig {', '.join(missing)} (held-out names must exist in every species)")
        info["species"][sp.name] = {split: {"file": f"{sp.name}.{split}.fa", "bp": counts[split]} for split in SPLITS}
        info["species"][sp.name]["dropped_contigs"] = len(dropped)
    (out / "manifest.tsv").write_text("species\tfasta\tsplit\n" + "".join(
        f"{sp.name}\t{sp.name}.{split}.fa\t{split}\n" for sp in species for split in SPLITS))
    (out / "splits.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    b = sub.add_parser("blocks", help="runs of alignment blocks (with BEDs) or equal runs of each genome")
    b.add_argument("manifest", type=Path, help="species<TAB>fasta[<TAB>bed] manifest (e.g. from data/prepare_*.py)")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--runs", type=int, default=20)
    b.add_argument("--val", default="10", help="comma-separated val run indices")
    b.add_argument("--test", default="5,15", help="comma-separated test run indices")
    c = sub.add_parser("by-contig", help="whole assemblies: whole chromosomes held out, by name")
    c.add_argument("manifest", type=Path, help="species<TAB>fasta manifest of whole-genome FASTA(.gz) files")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--val", required=True, help="comma-separated contig names for validation (e.g. chr7)")
    c.add_argument("--test", required=True, help="comma-separated contig names for test (e.g. chr8)")
    a = p.parse_args(argv)
    if a.mode == "blocks":
        spec = SplitSpec(a.runs, tuple(int(x) for x in a.val.split(",")), tuple(int(x) for x in a.test.split(",")))
        info = write_block_splits(read_manifest(a.manifest), spec, a.out)
    else:
        info = write_contig_splits(read_manifest(a.manifest), a.val.split(","), a.test.split(","), a.out)
    for name, entry in info["species"].items():
        print(name, {s: entry[s]["bp"] for s in SPLITS})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
