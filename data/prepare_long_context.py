"""The long-context experiments' data (experiments/long_context/), from four Debian example packages:

human chrX (the Mamba paper's Fig. 5 task: pretraining perplexity against context)
  chrX.fa.gz   GRCh37 chrX, NC_000023.10, first 69,999,930 bp ("hs37chrXtrunc"), smalt-examples
               test/data/hs37chrXtrunc.fa.gz, rewritten as BGZF (contig X) so it is indexed in place

bacterial species with held-out strains (species classification against context; the test strains are never
trained on, as a user's unseen isolates would be)
  species         train strains                          test strains
  e_coli          536 (NC_008253.1, bowtie-examples)      K-12 reference of wtdbg2-examples' selfSampleData
                                                          ("ecoliK12_mutated": K-12 with mutations planted for
                                                          a PacBio-correction test)
  s_aureus        N315, JH1, TW20 (sibelia-examples       MSSA476 (same file), NCTC 8325 and RN4220
                  Staphylococcus.fasta.gz)                (sibelia-examples C-Sibelia)
  h_pylori        F32 (sibelia-examples)                   Gambia94/24 (same file)
  k_pneumoniae    kaptive-example exact_match,             kaptive-example fragmented_assembly,
                  inexact_match (draft assemblies)         very_poor_match
  Draft assemblies are joined into one record with 100 N between contigs, so windows of a megabase fit (a window
  is drawn inside one record; windows with more than 10% N are redrawn).

Output (--out): chrX/chrX.fa.gz; strains/<species>_<strain>.fa.gz (BGZF) and strains/manifest.tsv
(species<TAB>fasta<TAB>split: test strains have split test, training strains none, so that with
data.test_fraction=0 they are cut into training and validation blocks and testing is on unseen strains alone).

Usage:
  python data/prepare_long_context.py --out .lcdata            # apt-get download + dpkg -x (Debian)
  python data/prepare_long_context.py --debs /folder/with/debs --out .lcdata
Licences: the sequences are NCBI RefSeq / public genome records as packaged by Debian (see data/README.md for the
packages' copyright statements; smalt-examples GPL-3, sibelia-examples GPL-2+, bowtie-examples Artistic,
kaptive-example GPL-3, wtdbg2-examples GPL-3 as packaging licences; NCBI places no restrictions on the sequences).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_bacteria import read_records, write_fasta  # noqa: E402

DOC = "usr/share/doc"
SIBELIA = f"{DOC}/sibelia/examples"
# name -> (package, file in it, record accession or None for all records joined, split)
STRAINS = {
    "e_coli_536": ("bowtie-examples", f"{DOC}/bowtie/examples/genomes/NC_008253.fna.gz", "NC_008253.1", "train"),
    "e_coli_k12": ("wtdbg2-examples", "selfSampleData/reference.fasta", "ecoliK12_mutated", "test"),
    "s_aureus_n315": ("sibelia-examples", f"{SIBELIA}/Sibelia/Staphylococcus_aureus/Staphylococcus.fasta.gz",
                      "NC_002745.2", "train"),
    "s_aureus_jh1": ("sibelia-examples", f"{SIBELIA}/Sibelia/Staphylococcus_aureus/Staphylococcus.fasta.gz",
                     "NC_009632.1", "train"),
    "s_aureus_tw20": ("sibelia-examples", f"{SIBELIA}/Sibelia/Staphylococcus_aureus/Staphylococcus.fasta.gz",
                      "NC_017331.1", "train"),
    "s_aureus_mssa476": ("sibelia-examples", f"{SIBELIA}/Sibelia/Staphylococcus_aureus/Staphylococcus.fasta.gz",
                         "NC_002953.3", "test"),
    "s_aureus_nctc8325": ("sibelia-examples", f"{SIBELIA}/C-Sibelia/Staphylococcus_aureus/NCTC8325.fasta.gz",
                          "NC_007795.1", "test"),
    "s_aureus_rn4220": ("sibelia-examples", f"{SIBELIA}/C-Sibelia/Staphylococcus_aureus/RN4220.fasta.gz", None,
                        "test"),
    "h_pylori_f32": ("sibelia-examples", f"{SIBELIA}/Sibelia/Helicobacter_pylori/Helicobacter_pylori.fasta.gz",
                     "NC_017366.1", "train"),
    "h_pylori_gambia94_24": ("sibelia-examples",
                             f"{SIBELIA}/Sibelia/Helicobacter_pylori/Helicobacter_pylori.fasta.gz", "NC_017371.1",
                             "test"),
    "k_pneumoniae_exact": ("kaptive-example", f"{DOC}/kaptive/examples/exact_match.fasta.gz", None, "train"),
    "k_pneumoniae_inexact": ("kaptive-example", f"{DOC}/kaptive/examples/inexact_match.fasta.gz", None, "train"),
    "k_pneumoniae_fragmented": ("kaptive-example", f"{DOC}/kaptive/examples/fragmented_assembly.fasta.gz", None,
                                "test"),
    "k_pneumoniae_poor": ("kaptive-example", f"{DOC}/kaptive/examples/very_poor_match.fasta.gz", None, "test"),
}
CHRX = ("smalt-examples", f"{DOC}/smalt/test/data/hs37chrXtrunc.fa.gz")
SPACER = "N" * 100
PACKAGES = sorted({p for p, *_ in STRAINS.values()} | {CHRX[0]})


def unpack(debs: dict[str, Path], root: Path) -> None:
    for pkg, deb in debs.items():
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    tar = root / DOC / "wtdbg2-examples" / "selfSampleData.tar.gz"
    with tarfile.open(tar) as archive:  # only the reference, not the 120 MB of reads
        archive.extract("selfSampleData/reference.fasta", root, filter="data")


def strain_sequence(root: Path, inner: str, accession: str | None) -> str:
    records = read_records(root / inner)
    if accession is None:
        return SPACER.join(records.values())
    if accession not in records:
        raise SystemExit(f"{inner}: no record {accession} (found {', '.join(records)})")
    return records[accession]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--debs", type=Path, help="folder holding the .deb files (default: apt-get download them)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = args.debs
        if folder is None:
            folder = tmp / "debs"
            folder.mkdir()
            subprocess.run(["apt-get", "download", *PACKAGES], cwd=folder, check=True)
        debs = {pkg: next(folder.glob(f"{pkg}_*.deb"), None) for pkg in PACKAGES}
        missing = [pkg for pkg, deb in debs.items() if deb is None]
        if missing:
            parser.error(f"{folder}: no .deb for {', '.join(missing)}")
        unpack(debs, tmp / "x")
        (args.out / "chrX").mkdir(parents=True, exist_ok=True)
        (chrx,) = read_records(tmp / "x" / CHRX[1]).values()
        write_fasta(args.out / "chrX" / "chrX.fa.gz", "X", "GRCh37 NC_000023.10 (hs37chrXtrunc.fa.gz)", chrx,
                    bgzip=True)
        print(f"chrX\t{len(chrx)} bp", flush=True)
        strains = args.out / "strains"
        strains.mkdir(parents=True, exist_ok=True)
        rows = ["species\tfasta\tsplit"]
        for name, (_, inner, accession, split) in STRAINS.items():
            seq = strain_sequence(tmp / "x", inner, accession)
            write_fasta(strains / f"{name}.fa.gz", name, f"{accession or 'all contigs'} (from {Path(inner).name})",
                        seq.upper(), bgzip=True)
            species = "_".join(name.split("_")[:2])  # e_coli, s_aureus, h_pylori, k_pneumoniae
            # a training strain's row has no split: cut into train and validation blocks (run with
            # data.test_fraction=0, so that testing is on the test strains alone)
            rows.append(f"{species}\t{name}.fa.gz\t{'' if split == 'train' else split}")
            print(f"{name}\t{split}\t{len(seq)} bp", flush=True)
        (strains / "manifest.tsv").write_text("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
