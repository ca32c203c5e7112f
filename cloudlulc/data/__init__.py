"""CloudLULC-Set: its layout, metadata table, synthetic generator and torch dataset.

Names are imported on first use (:mod:`cloudlulc.lazy`): the layout is read where torch is not needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudlulc.lazy import lazy_names

if TYPE_CHECKING:
    from cloudlulc.data.dataset import CloudLULCDataset
    from cloudlulc.data.layout import DatasetLayout, SampleRecord, SplitFile, parse_split_file, read_split_file
    from cloudlulc.data.synthetic import SynthConfig, generate_dataset

__getattr__ = lazy_names(
    __name__,
    {
        "dataset": ["CloudLULCDataset"],
        "layout": ["DatasetLayout", "SampleRecord", "SplitFile", "parse_split_file", "read_split_file"],
        "synthetic": ["SynthConfig", "generate_dataset"],
    },
)

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
