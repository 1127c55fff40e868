"""Shared test fixtures: a short real DNA sequence and small model configs."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from mambadna.config import tiny

DATA_DIR = Path(__file__).resolve().parents[1] / "mambadna" / "data" / "dna"  # the FASTAs shipped in the wheel

# Human mitochondrial genome, rCRS (GenBank NC_012920.1), positions 1-320. The first 600 bp of phage lambda
# (any FASTA under mambadna/data/dna/ with "lambda" in its name) are preferred when that file is present.
RCRS_1_320 = (
    "GATCACAGGTCTATCACCCTATTAACCACTCACGGGAGCTCTCCATGCATTTGGTATTTTCGTCTGGGGGGTATGCACGC"
    "GATAGCATTGCGAGACGCTGGAGCCGGAGCACCCTATGTCGCAGTATCTGTCTTTGATTCCTGCCTCATCCTATTATTTAT"
    "CGCACCTACGTTCAATATTACAGGCGAACATACTTACTAAAGTGTGTTAATTAATTAATGCTTGTAGGACATAATAATAACA"
    "ATTGAATGTCTGCACAGCCACTTTCCACACAGACATCATAACAAAAAATTTCCACCAAACCCCCCCTCCCCCGCTTC"
)
FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fa.gz", ".fasta.gz", ".fna.gz")


def _first_record(path: Path, max_bp: int) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    parts, total = [], 0
    with opener(path, "rt") as handle:
        for i, line in enumerate(handle):
            if line.startswith(">"):
                if i > 0:
                    break
                continue
            parts.append(line.strip())
            total += len(parts[-1])
            if total >= max_bp:
                break
    return "".join(parts)[:max_bp]


def real_dna_sequence(max_bp: int = 600) -> str:
    """Phage lambda's first `max_bp` bases if the package ships it, else the first 320 bp of the human mtDNA rCRS."""
    if DATA_DIR.is_dir():
        for path in sorted(DATA_DIR.rglob("*lambda*")):
            if path.name.lower().endswith(FASTA_SUFFIXES):
                seq = _first_record(path, max_bp)
                if len(seq) >= 300:
                    return seq.upper()
    return RCRS_1_320[:max_bp]


@pytest.fixture(scope="session")
def real_dna() -> str:
    return real_dna_sequence()


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """A module's scratch folder with MAMBADNA_CACHE inside it and two tiny saved models, made once after
    torch.manual_seed(0): {"root", "lm" (a MambaLM), "clf" (a 3-class mean-pooled MambaClassifier, classes a, b, c)}."""
    from mambadna.model import MambaClassifier, MambaLM

    root = tmp_path_factory.mktemp("models")
    env = pytest.MonkeyPatch()
    env.setenv("MAMBADNA_CACHE", str(root / "cache"))
    torch.manual_seed(0)
    w = {"root": root, "lm": root / "lm", "clf": root / "clf"}
    MambaLM(tiny(d_model=16, d_state=4)).save_pretrained(w["lm"])
    MambaClassifier(tiny(d_model=16, d_state=4), 3, "mean", ["a", "b", "c"]).save_pretrained(w["clf"])
    yield w
    env.undo()


@pytest.fixture
def tiny_config():
    return tiny(d_model=32, d_state=8)


@pytest.fixture
def seeded():
    torch.manual_seed(0)


@pytest.fixture
def single_thread():
    """Run a test on one intra-op thread. The test models are tiny, so threads buy nothing, and on a shared
    2-core runner OpenMP workers spinning against other processes made a 2-second test take 50 seconds."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
