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
from cloudlulc.io.rasters import expect_band_count, grid_mismatch, info_of, open_raster, read_window
from cloudlulc.io.sentinel import read_reflectance, scale_sar


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

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        record = self.records[index]
        with rasterio_env(self.layout.root), ExitStack() as stack:
            optical_file = stack.enter_context(open_raster(self.layout.uri(record.opt_cloudy)))
            reference = info_of(optical_file)
            expect_band_count(reference, len(schema.S2_BANDS), "Opt_S2_cloudy")
            window = self._window(reference.height, reference.width)

            def open_checked(path: str, bands: int, what: str) -> DatasetReader:
                dataset = stack.enter_context(open_raster(self.layout.uri(path)))
                info = info_of(dataset)
                expect_band_count(info, bands, what)
                problem = grid_mismatch(reference, info)
                if problem:
                    raise DataError(info.path, problem)
                return dataset

            optical = read_reflectance(optical_file, window)
            sar = scale_sar(
                np.stack(
                    [
                        read_window(open_checked(path, 1, f"SAR {pol}"), window)[0]
                        for path, pol in ((record.sar_vv, "VV"), (record.sar_vh, "VH"))
                    ]
                )
            )
            arrays: dict[str, np.ndarray] = {"optical": optical, "sar": sar}
            if record.label:
                arrays["label"] = self._label(read_window(open_checked(record.label, 1, "Label"), window)[0], record)
            else:
                arrays["label"] = np.full(optical.shape[1:], schema.IGNORE_INDEX, np.uint8)
            if self.return_clear and record.opt_clear:
                clear_file = open_checked(record.opt_clear, len(schema.S2_BANDS), "Opt_S2_clear")
                arrays["clear"] = read_reflectance(clear_file, window)
            if self.return_cloud_mask:
                if not record.cloud_mask:
                    raise DataError(self.layout.uri(record.opt_cloudy), "return_cloud_mask=True but no CloudMask file")
                arrays["cloud_mask"] = read_window(open_checked(record.cloud_mask, 1, "CloudMask"), window)[0]
        if self.augment:
            arrays = self._flip_rotate(arrays)
        tensors = {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in arrays.items()}
        sample = Sample(name=record.name, optical=tensors["optical"], sar=tensors["sar"], label=tensors["label"].long())
        if "clear" in tensors:
            sample["clear"] = tensors["clear"]
        if "cloud_mask" in tensors:
            sample["cloud_mask"] = tensors["cloud_mask"]
        return sample

    def _window(self, height: int, width: int) -> Window | None:
        if self.crop_size is None:
            return None
        if self.crop_size > min(height, width):
            raise ValueError(f"crop_size {self.crop_size} exceeds the patch size {height}x{width}")
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
