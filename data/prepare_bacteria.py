"""Four bacterial genomes for species classification, from two Debian packages (see data/README.md):

  ecoli_536            Escherichia coli 536, NC_008253.1, 4,938,920 bp    bowtie-examples  genomes/NC_008253.fna.gz
  hpylori_f32          Helicobacter pylori F32, NC_017366.1, 1,578,824 bp  sibelia-examples Helicobacter_pylori.fasta.gz
  hpylori_gambia94_24  H. pylori Gambia94/24, NC_017371.1, 1,709,911 bp    sibelia-examples (same file)
  saureus_n315         Staphylococcus aureus N315, NC_002745.2, 2,814,816 bp  sibelia-examples Staphylococcus.fasta.gz

Every pair differs more than the great apes do (whose chr22 blocks share ~96-99% of their sequence): the two
H. pylori strains are the closest pair (Mash distance 0.058 from shared canonical 21-mers, i.e. ~94% identity;
human-chimpanzee on the bundled chr22 blocks: 0.014), and the three species are unrelated (distance > 0.4;
GC 50.5%, 38.9-39.1%, 32.8%). So short windows should already separate the species, and the two H. pylori strains
are where longer context can still help. (The package's four other S. aureus strains are left out: they are
99% identical to N315, as close as the apes.)

Output (in --out): ``<name>.fa`` (one contig ``<name>``, 60 bases a line, uppercase as the sources give it;
``--bgzip`` writes ``<name>.fa.gz`` in BGZF instead, which pyfaidx reads directly), and ``manifest.tsv``
(``species<TAB>fasta``).

Usage:
  python data/prepare_bacteria.py --out /somewhere/bacteria           # apt-get download + dpkg -x (Debian)
  python data/prepare_bacteria.py --sibelia-deb sibelia-examples_3.0.7+dfsg-3_all.deb \\
      --bowtie-deb bowtie-examples_1.3.1-1_all.deb --out /somewhere/bacteria
With internet and no Debian: the four RefSeq records from NCBI nuccore (accessions above, "Send to: FASTA").
"""

from __future__ import annotations

import argparse
import gzip
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SIBELIA = "usr/share/doc/sibelia/examples/Sibelia"
BOWTIE = "usr/share/doc/bowtie/examples/genomes"
# species name -> (package, file inside the package, RefSeq accession of the record to take)
GENOMES = {
    "ecoli_536": ("bowtie-examples", f"{BOWTIE}/NC_008253.fna.gz", "NC_008253.1"),
    "hpylori_f32": ("sibelia-examples", f"{SIBELIA}/Helicobacter_pylori/Helicobacter_pylori.fasta.gz", "NC_017366.1"),
    "hpylori_gambia94_24": ("sibelia-examples", f"{SIBELIA}/Helicobacter_pylori/Helicobacter_pylori.fasta.gz",
                            "NC_017371.1"),
    "saureus_n315": ("sibelia-examples", f"{SIBELIA}/Staphylococcus_aureus/Staphylococcus.fasta.gz", "NC_002745.2"),
}
LENGTHS = {"ecoli_536": 4938920, "hpylori_f32": 1578824, "hpylori_gambia94_24": 1709911, "saureus_n315": 2814816}
LINE_BP = 60


def read_records(path: Path) -> dict[str, str]:
    """{RefSeq accession (from the header's ref|...| or first word): sequence} of a (gzipped) FASTA."""
    opener = gzip.open if path.name.endswith(".gz") else open
    records: dict[str, list[str]] = {}
    current = None
    with opener(path, "rt") as fh:
        for line in fh:
            if line.startswith(">"):
                match = re.search(r"ref\|([^|]+)\|", line)
                current = match.group(1) if match else line[1:].split()[0]
                records[current] = []
            elif current is not None:
                records[current].append(line.strip())
    return {acc: "".join(parts) for acc, parts in records.items()}


def fetch_debs(workdir: Path) -> dict[str, Path]:
    """``apt-get download`` both packages into workdir; {package: .deb path}."""
    debs = {}
    for pkg in sorted({pkg for pkg, _, _ in GENOMES.values()}):
        subprocess.run(["apt-get", "download", pkg], cwd=workdir, check=True)
        debs[pkg] = next(workdir.glob(f"{pkg}_*.deb"))
    return debs


def write_fasta(path: Path, name: str, description: str, seq: str, bgzip: bool = False) -> None:
    if bgzip:
        from Bio import bgzf

        handle = bgzf.BgzfWriter(str(path), "wb")
        write = lambda text: handle.write(text.encode())  # noqa: E731
    else:
        handle = open(path, "w")
        write = handle.write
    try:
        write(f">{name} {description}\n")
        for i in range(0, len(seq), LINE_BP):
            write(seq[i : i + LINE_BP] + "\n")
    finally:
        handle.close()


def convert(sources: dict[str, Path], out: Path, bgzip: bool = False, check_lengths: bool = True) -> dict[str, int]:
    """sources: {species name: FASTA(.gz) holding its record}. Writes the FASTAs and the manifest; {name: bp}."""
    out.mkdir(parents=True, exist_ok=True)
    cache: dict[Path, dict[str, str]] = {}
    written, manifest = {}, ["species\tfasta\n"]
    for name, src in sources.items():
        records = cache.setdefault(src, read_records(src))
        acc = GENOMES[name][2] if name in GENOMES else next(iter(records))
        if acc not in records:
            raise SystemExit(f"{src}: no record {acc} (found {', '.join(records)})")
        seq = records[acc]
        if check_lengths and name in LENGTHS and len(seq) != LENGTHS[name]:
            raise SystemExit(f"{src}: {acc} has {len(seq)} bp, expected {LENGTHS[name]}")
        file = f"{name}.fa.gz" if bgzip else f"{name}.fa"
        write_fasta(out / file, name, f"{acc} (from {src.name})", seq, bgzip)
        manifest.append(f"{name}\t{file}\n")
        written[name] = len(seq)
    (out / "manifest.tsv").write_text("".join(manifest))
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--sibelia-deb", type=Path, help="an already downloaded sibelia-examples .deb")
    parser.add_argument("--bowtie-deb", type=Path, help="an already downloaded bowtie-examples .deb")
    parser.add_argument("--bgzip", action="store_true", help="write BGZF-compressed <name>.fa.gz (needs biopython)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        debs = {"sibelia-examples": args.sibelia_deb, "bowtie-examples": args.bowtie_deb}
        if not all(debs.values()):
            fetched = fetch_debs(tmp)
            debs = {pkg: deb or fetched[pkg] for pkg, deb in debs.items()}
        for pkg, deb in debs.items():
            if not Path(deb).is_file():
                parser.error(f"{deb}: no such file")
            subprocess.run(["dpkg", "-x", str(deb), str(tmp / pkg)], check=True)
        sources = {name: tmp / pkg / inner for name, (pkg, inner, _) in GENOMES.items()}
        written = convert(sources, args.out, args.bgzip)
    for name, n_bp in written.items():
        print(f"{name}\t{n_bp} bp\t{args.out / (name + ('.fa.gz' if args.bgzip else '.fa'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
