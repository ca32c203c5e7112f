"""CloudLULC-Set: its layout, metadata table, synthetic generator and torch dataset."""

from cloudlulc.data.dataset import CloudLULCDataset
from cloudlulc.data.layout import DatasetLayout, SampleRecord, SplitFile, parse_split_file, read_split_file
from cloudlulc.data.synthetic import SynthConfig, generate_dataset

__all__ = [
    "CloudLULCDataset",
    "DatasetLayout",
    "SampleRecord",
    "SplitFile",
    "SynthConfig",
    "generate_dataset",
    "parse_split_file",
    "read_split_file",
]
