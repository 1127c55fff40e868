"""Genomes in, batches out: pyfaidx-backed genome access, window / species / labelled datasets, DataModules.

Every name loads its module on first use (PEP 562): the settings layer reads mambadna.data.tables (which files are
tables) without importing torch, and importing this package never imports Lightning; the DataModules
(``GenomeDataModule``, ``SpeciesDataModule``, ``LabelledDataModule``, ``StreamsDataModule``) live in
mambadna.data.datamodules.
"""

import importlib

_WHERE = {
    "LengthBucketBatchSampler": "batching", "PadCollate": "batching",
    "bundled_genomes": "bundled", "bundled_path": "bundled", "data_dir": "bundled",
    "DataError": "errors", "DataWarning": "errors",
    "ContigStats": "genome", "Genome": "genome",
    "LabelledSequenceDataset": "labelled",
    "MaskedWindows": "masking", "mask_tokens": "masking",
    "normalize_fasta": "normalize",
    "Interval": "regions", "read_bed": "regions", "split_regions": "regions",
    "SpeciesWindowDataset": "species", "read_manifest": "species",
    "ContigStreams": "streams",
    "GenomeWindowDataset": "windows",
    "GenomeDataModule": "datamodules", "SpeciesDataModule": "datamodules", "LabelledDataModule": "datamodules",
    "StreamsDataModule": "datamodules",
}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"mambadna.data.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'mambadna.data' has no attribute {name!r}")
