"""A torch Dataset over the CloudLULC-Set layout, returning model-ready tensors.

Files are opened inside ``__getitem__`` (never held by the Dataset object), so DataLoader workers
each open their own handles and ``num_workers > 0`` is safe. Random crops read only the crop window.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from typing import TypedDict

import numpy as np
import torch
from rasterio.io import DatasetReader
from rasterio.windows import Window
from torch.utils.data import Dataset

from cloudlulc import schema
from cloudlulc.data.layout import SPLITS, DatasetLayout, SampleRecord, Split
from cloudlulc.errors import DataError
from cloudlulc.io.gdal_env import rasterio_env
from cloudlulc.io.rasters import (
    RasterInfo,
    expect_band_count,
    expect_patch_size,
    grid_mismatch,
    info_of,
    open_raster,
    read_window,
)
from cloudlulc.io.sentinel import check_sar_units, note_once, read_reflectance, sar_units_declared, scale_sar


class Sample(TypedDict, total=False):
    """One item: model inputs in [0, 1], the label, optional references, and the sample name."""

    name: str
    optical: torch.Tensor  # float32 [12,H,W]
    sar: torch.Tensor  # float32 [2,H,W], VV then VH
    label: torch.Tensor  # int64 [H,W], 255 = no label
    clear: torch.Tensor  # float32 [12,H,W], only with return_clear
    cloud_mask: torch.Tensor  # uint8 [H,W] schema.CLOUD_* codes, only with return_cloud_mask


_VALID_LABEL = np.zeros(256, bool)
_VALID_LABEL[list(schema.VALID_LABEL_VALUES)] = True


class CloudLULCDataset(Dataset[Sample]):
    """Samples of one or more splits as ``optical`` [12,H,W], ``sar`` [2,H,W] and ``label`` [H,W].

    Args:
        root: dataset folder or ``s3://`` prefix in the CloudLULC-Set layout.
        splits: which split(s) to read.
        crop_size: side of a square crop; random when ``augment``, centred otherwise; None = full patch.
        augment: random crops, flips and 90-degree rotations (training); False is deterministic.
        return_clear: also return ``clear`` [12,H,W], the cloud-free reference.
        return_cloud_mask: also return ``cloud_mask`` [H,W] (schema.CLOUD_* codes) where present.
        exclude: sample names to skip, e.g. a validation quarantine list.
        size_multiple: full patches (no crop) must have sides that are multiples of this (the network's
            stride); a sample that breaks it is a DataError naming the file.
        in_memory: keep every decoded patch after its first read and crop from memory afterwards.
            Opening and checking four GeoTIFFs costs about 20 ms per sample, far more than a small
            model's step on a GPU; a set of a few thousand small patches fits in memory. The copy
            belongs to the process (each DataLoader worker holds its own, so use ``num_workers=0``)
            and outlives the Dataset object, so the next run on the same set in that process reads
            nothing; it holds one dataset at a time.

    Every read checks, naming the file: band counts and grids, the patch size from the header (before
    pixels are read), the optical and SAR units against their values, and label values over the whole
    label (not only a crop of it).
    """

    def __init__(
        self,
        root: str,
        splits: Split | Sequence[Split] = "train",
        *,
        crop_size: int | None = None,
        augment: bool = False,
        return_clear: bool = False,
        return_cloud_mask: bool = False,
        exclude: Iterable[str] = (),
        size_multiple: int = 1,
        in_memory: bool = False,
    ) -> None:
        self.layout = DatasetLayout(root)
        wanted = (splits,) if isinstance(splits, str) else tuple(splits)
        unknown = [s for s in wanted if s not in SPLITS]
        if unknown:
            raise ValueError(f"unknown split(s) {unknown}; choose from {SPLITS}")
        excluded = set(exclude)
        self.records: list[SampleRecord] = [r for r in self.layout.read_records(wanted) if r.name not in excluded]
        if return_clear and any(r.opt_clear is None for r in self.records):
            missing = next(r.name for r in self.records if r.opt_clear is None)
            raise DataError(self.layout.root, f"return_clear=True but sample {missing} has no Opt_S2_clear file")
        self.crop_size = crop_size
        self.augment = augment
        self.return_clear = return_clear
        self.return_cloud_mask = return_cloud_mask
        self.size_multiple = size_multiple
        self.in_memory = in_memory

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        record = self.records[index]
        if self.in_memory:
            memory = _memory_of(self.layout.root)
            key = (record.name, self.return_clear, self.return_cloud_mask)
            if key not in memory:
                memory[key] = self._read(record, whole=True)
            reference, whole = memory[key]
            window = self._window(reference)
            arrays = {key: value if window is None else value[(..., *_slices(window))] for key, value in whole.items()}
        else:
            arrays = self._read(record)[1]
        if self.augment:
            arrays = self._flip_rotate(arrays)
        tensors = {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in arrays.items()}
        sample = Sample(name=record.name, optical=tensors["optical"], sar=tensors["sar"], label=tensors["label"].long())
        if "clear" in tensors:
            sample["clear"] = tensors["clear"]
        if "cloud_mask" in tensors:
            sample["cloud_mask"] = tensors["cloud_mask"]
        return sample

    def _read(self, record: SampleRecord, whole: bool = False) -> tuple[RasterInfo, dict[str, np.ndarray]]:
        """The sample's arrays: this item's window of them, or the whole patch (``whole``, to keep in memory)."""
        with rasterio_env(self.layout.root), ExitStack() as stack:
            optical_file = stack.enter_context(open_raster(self.layout.uri(record.opt_cloudy)))
            reference = info_of(optical_file)
            expect_band_count(reference, len(schema.S2_BANDS), "Opt_S2_cloudy")
            window = None if whole else self._window(reference)
            if whole:
                expect_patch_size(reference, schema.MAX_PATCH_SIDE)

            def open_checked(path: str, bands: int, what: str) -> DatasetReader:
                dataset = stack.enter_context(open_raster(self.layout.uri(path)))
                info = info_of(dataset)
                expect_band_count(info, bands, what)
                problem = grid_mismatch(reference, info)
                if problem:
                    raise DataError(info.path, problem)
                return dataset

            optical = read_reflectance(optical_file, window)
            sar_files = [
                open_checked(path, 1, f"SAR {pol}") for path, pol in ((record.sar_vv, "VV"), (record.sar_vh, "VH"))
            ]
            sar = scale_sar(_sar_db(sar_files, window))
            arrays: dict[str, np.ndarray] = {"optical": optical, "sar": sar}
            if record.label:
                label = self._label(read_window(open_checked(record.label, 1, "Label"))[0], record)
                arrays["label"] = label if window is None else label[_slices(window)]
            else:
                arrays["label"] = np.full(optical.shape[1:], schema.IGNORE_INDEX, np.uint8)
            if self.return_clear and record.opt_clear:
                clear_file = open_checked(record.opt_clear, len(schema.S2_BANDS), "Opt_S2_clear")
                arrays["clear"] = read_reflectance(clear_file, window)
            if self.return_cloud_mask:
                if not record.cloud_mask:
                    raise DataError(self.layout.uri(record.opt_cloudy), "return_cloud_mask=True but no CloudMask file")
                arrays["cloud_mask"] = read_window(open_checked(record.cloud_mask, 1, "CloudMask"), window)[0]
        return reference, arrays

    def _window(self, reference: RasterInfo) -> Window | None:
        height, width = reference.height, reference.width
        expect_patch_size(reference, schema.MAX_PATCH_SIDE)
        if self.crop_size is None:
            if height % self.size_multiple or width % self.size_multiple:
                raise DataError(
                    reference.path,
                    f"patch is {width} x {height} pixels; full patches need sides that "
                    f"are multiples of {self.size_multiple}",
                )
            return None
        if self.crop_size > min(height, width):
            raise DataError(
                reference.path,
                f"patch is {width} x {height} pixels, smaller than the crop of {self.crop_size} (crop_size)",
            )
        if self.augment:
            row = int(torch.randint(0, height - self.crop_size + 1, ()).item())
            col = int(torch.randint(0, width - self.crop_size + 1, ()).item())
        else:
            row, col = (height - self.crop_size) // 2, (width - self.crop_size) // 2
        return Window(col, row, self.crop_size, self.crop_size)

    def _label(self, label: np.ndarray, record: SampleRecord) -> np.ndarray:
        if not _VALID_LABEL[label].all():
            bad = sorted(set(np.unique(label).tolist()) - schema.VALID_LABEL_VALUES)
            raise DataError(
                self.layout.uri(record.label or ""),
                f"label values {bad} are outside the class set {sorted(schema.VALID_LABEL_VALUES)}",
            )
        return label

    @staticmethod
    def _flip_rotate(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The same random flip and rot90 for every array (last two axes are rows, cols)."""
        turns = int(torch.randint(0, 4, ()).item())
        flip = bool(torch.randint(0, 2, ()).item())
        out = {}
        for key, value in arrays.items():
            value = np.rot90(value, turns, axes=(-2, -1))
            out[key] = value[..., ::-1] if flip else value
        return out


_MEMORY: dict[str, dict[tuple[str, bool, bool], tuple[RasterInfo, dict[str, np.ndarray]]]] = {}


def _memory_of(root: str) -> dict[tuple[str, bool, bool], tuple[RasterInfo, dict[str, np.ndarray]]]:
    """This process's decoded patches of ``root``; switching to another dataset frees the previous one's."""
    if root not in _MEMORY:
        _MEMORY.clear()
        _MEMORY[root] = {}
    return _MEMORY[root]


def _slices(window: Window) -> tuple[slice, slice]:
    """Row and column slices of an integer window, to cut a crop out of an array read whole."""
    return (
        slice(int(window.row_off), int(window.row_off + window.height)),
        slice(int(window.col_off), int(window.col_off + window.width)),
    )


def _sar_db(files: list[DatasetReader], window: Window | None) -> np.ndarray:
    """VV and VH sigma0 in dB [2,h,w]: units as declared (verified against the values) or as the values say.

    Linear power is converted (and the conversion noted once per file); a declaration the values
    contradict is a DataError naming the file.
    """
    bands = np.stack([read_window(dataset, window, out_dtype="float32")[0] for dataset in files])
    declared = {sar_units_declared(dataset) for dataset in files}
    units = check_sar_units(declared.pop() if len(declared) == 1 else None, bands, files[0].name)
    if units == "linear":
        note_once(files[0].name, "SAR values are linear power; converted to dB")
        return schema.linear_to_db(bands)
    return bands
