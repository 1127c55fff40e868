"""Genomes in, batches out: pyfaidx-backed genome access, window / species / labelled datasets, DataModules.

Importing this package does not import Lightning; the DataModules (``GenomeDataModule``, ``SpeciesDataModule``,
``LabelledDataModule``, ``StreamsDataModule``) load mambadna.data.datamodules on first attribute access.
"""

from mambadna.data.batching import LengthBucketBatchSampler, PadCollate
from mambadna.data.bundled import bundled_genomes, bundled_path, data_dir
from mambadna.data.errors import DataError, DataWarning
from mambadna.data.genome import ContigStats, Genome
from mambadna.data.labelled import LabelledSequenceDataset
from mambadna.data.masking import MaskedWindows, mask_tokens
from mambadna.data.normalize import normalize_fasta
from mambadna.data.regions import Interval, read_bed, split_regions
from mambadna.data.species import SpeciesWindowDataset, read_manifest
from mambadna.data.streams import ContigStreams
from mambadna.data.windows import GenomeWindowDataset

_LIGHTNING = ("GenomeDataModule", "SpeciesDataModule", "LabelledDataModule", "StreamsDataModule")

__all__ = [
    "ContigStats", "ContigStreams", "DataError", "DataWarning", "Genome", "GenomeWindowDataset", "Interval",
    "LabelledSequenceDataset", "LengthBucketBatchSampler", "MaskedWindows", "PadCollate", "SpeciesWindowDataset",
    "bundled_genomes", "bundled_path", "data_dir", "mask_tokens", "normalize_fasta", "read_bed", "read_manifest",
    "split_regions", *_LIGHTNING,
]


def __getattr__(name):
    if name in _LIGHTNING:
        from mambadna.data import datamodules

        return getattr(datamodules, name)
    raise AttributeError(f"module 'mambadna.data' has no attribute {name!r}")
