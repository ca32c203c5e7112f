"""Writing a map as it is computed, surviving a kill at any point, and publishing it as a COG.

Rows are streamed into a tiled GeoTIFF under a temporary name beside the output. Only whole block
rows are written, each block exactly once, and after every write the file is closed (flushed) and a
small progress record beside it is replaced atomically. A killed run therefore leaves a GeoTIFF whose
first ``rows_written`` rows are final, and a record that says so and names the inputs and parameters
they came from. The finished GeoTIFF is turned into a Cloud-Optimized GeoTIFF by GDAL's COG driver
under a temporary name, validated, then renamed (or uploaded whole to ``s3://``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from cloudlulc import schema
from cloudlulc.errors import DataError
from cloudlulc.io.storage import TEMP_MARKER, atomic_local_path, is_s3_uri
from cloudlulc.mapping.scene_pair import SceneGrid

log = logging.getLogger(__name__)

PARTIAL_BLOCK = 128
"""Block size of the temporary GeoTIFF: the granularity of resume (rows are written a block row at a time)."""
RECORD_FORMAT = 1
SCORE_NODATA = 0
"""Nodata of every 1-255 score band (confidence, reliability): scores are clipped to at least 1 (a mapped
pixel's top-class probability is at least 1/6 anyway)."""
SCORE_BANDS = ("confidence", "reliability")
"""Optional single-band outputs beside the class map, in the order they are written."""


@dataclass(frozen=True)
class WorkPaths:
    """Temporary files of one output: the partial class map, the partial score bands and the progress record."""

    classes: Path
    confidence: Path
    reliability: Path
    record: Path

    def band(self, name: str) -> Path:
        """The partial file of score band ``name`` (see :data:`SCORE_BANDS`)."""
        return {"confidence": self.confidence, "reliability": self.reliability}[name]


def work_paths(out_uri: str, work_dir: str | Path | None = None) -> WorkPaths:
    """Where the temporary files of ``out_uri`` live: beside a local output, else in ``work_dir``.

    For an ``s3://`` output without ``work_dir`` they go to a folder of the system's temporary
    directory named after the output URI, so a rerun on the same machine finds them again.
    """
    name = out_uri.rstrip("/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name else name
    if work_dir is not None:
        folder = Path(work_dir)
    elif is_s3_uri(out_uri):
        digest = hashlib.sha256(out_uri.encode()).hexdigest()[:16]
        folder = Path(tempfile.gettempdir()) / "cloudlulc-mapping" / digest
    else:
        folder = Path(out_uri).parent
    prefix = f".{stem}{TEMP_MARKER}"
    return WorkPaths(
        classes=folder / f"{prefix}partial.tif",
        confidence=folder / f"{prefix}partial-confidence.tif",
        reliability=folder / f"{prefix}partial-reliability.tif",
        record=folder / f"{prefix}progress.json",
    )


def _describe_difference(stored: Any, current: Any, path: str = "") -> list[str]:
    """Human-readable differences between two JSON-like values."""
    if isinstance(stored, dict) and isinstance(current, dict):
        differences = []
        for key in sorted(set(stored) | set(current)):
            differences += _describe_difference(stored.get(key), current.get(key), f"{path}.{key}" if path else key)
        return differences
    return [] if stored == current else [f"{path}: {stored!r} then, {current!r} now"]


class PartialMap:
    """The map being written: class (and score band) GeoTIFFs under temporary names, and their progress.

    Open with :meth:`open`, which resumes when a matching record exists. Feed final rows in order with
    :meth:`append`; rows before :attr:`rows_written` are ignored, so a resumed run may recompute them.
    Score bands (``bands``, names from :data:`SCORE_BANDS`) are uint8 1-255 with 0 as nodata.
    """

    def __init__(
        self, paths: WorkPaths, grid: SceneGrid, identity: dict[str, Any], *, bands: tuple[str, ...] = ()
    ) -> None:
        unknown = sorted(set(bands) - set(SCORE_BANDS))
        if unknown:
            raise ValueError(f"unknown score bands {unknown}; choose from {SCORE_BANDS}")
        self.paths = paths
        self.grid = grid
        self.identity = identity
        self.bands = tuple(name for name in SCORE_BANDS if name in bands)
        self.rows_written = 0
        self._pending: dict[str, np.ndarray] = {
            name: np.empty((0, grid.width), np.uint8) for name in ("classes", *self.bands)
        }

    @classmethod
    def open(
        cls,
        paths: WorkPaths,
        grid: SceneGrid,
        identity: dict[str, Any],
        *,
        bands: tuple[str, ...] = (),
        tags: dict[str, str],
    ) -> PartialMap:
        """Resume the run recorded at ``paths.record`` or start a new one.

        Raises:
            DataError: the record belongs to other inputs or parameters (naming the record and what differs).
        """
        partial = cls(paths, grid, identity, bands=bands)
        identity = json.loads(json.dumps(identity))  # the form it has once stored
        if paths.record.exists():
            try:
                record = json.loads(paths.record.read_text())
            except (OSError, ValueError) as error:
                raise DataError(
                    str(paths.record), f"unreadable progress record ({error}); delete it to start over"
                ) from error
            differences = _describe_difference(record.get("identity"), identity)
            if record.get("format") != RECORD_FORMAT or differences:
                raise DataError(
                    str(paths.record),
                    "an unfinished run with other inputs or parameters is in progress here ("
                    + "; ".join(differences or [f"record format {record.get('format')}"])
                    + "); rerun with the same inputs and parameters to resume it, or delete "
                    + ", ".join(
                        str(f) for f in (paths.record, paths.classes, paths.confidence, paths.reliability) if f.exists()
                    )
                    + " to start over",
                )
            if partial._partials_intact():
                partial.rows_written = int(record["rows_written"])
                return partial
            log.warning("%s: partial map missing or damaged; starting over", paths.classes)
        partial._create(tags)
        return partial

    def _files(self) -> dict[str, Path]:
        return {"classes": self.paths.classes, **{name: self.paths.band(name) for name in self.bands}}

    def _partials_intact(self) -> bool:
        try:
            for path in self._files().values():
                with rasterio.open(path) as dataset:
                    if (dataset.width, dataset.height) != (self.grid.width, self.grid.height):
                        return False
        except RasterioError:
            return False
        return True

    def _create(self, tags: dict[str, str]) -> None:
        self.paths.record.parent.mkdir(parents=True, exist_ok=True)
        self.paths.record.unlink(missing_ok=True)  # a record never describes a file it did not see made
        _create_gtiff(self.paths.classes, self.grid, schema.IGNORE_INDEX, "class", tags, schema.colour_table())
        for name in self.bands:
            _create_gtiff(self.paths.band(name), self.grid, SCORE_NODATA, name, tags, None)
        self.rows_written = 0
        self._save_record()

    def _save_record(self) -> None:
        record = {"format": RECORD_FORMAT, "identity": self.identity, "rows_written": self.rows_written}
        with atomic_local_path(self.paths.record) as temp_path:
            temp_path.write_text(json.dumps(record, indent=1) + "\n")

    def append(self, first_row: int, classes: np.ndarray, scores: dict[str, np.ndarray] | None = None) -> None:
        """Final rows ``[first_row, first_row + len(classes))`` and each score band's; written a block row at a time."""
        scores = scores or {}
        end = first_row + classes.shape[0]
        pending_end = self.rows_written + self._pending["classes"].shape[0]
        if end <= pending_end:
            return
        if first_row > pending_end:
            raise ValueError(f"rows {pending_end}-{first_row} were skipped: rows must be appended in order")
        missing = [name for name in self.bands if name not in scores]
        if missing:
            raise ValueError(f"this map has score bands {missing}: pass their rows")
        skip = pending_end - first_row
        for name, rows in {"classes": classes, **{n: scores[n] for n in self.bands}}.items():
            self._pending[name] = np.concatenate([self._pending[name], rows[skip:]])
        self._write_ready()

    def _write_ready(self) -> None:
        pending = self._pending["classes"].shape[0]
        at_end = self.rows_written + pending == self.grid.height
        count = pending if at_end else pending // PARTIAL_BLOCK * PARTIAL_BLOCK
        if count == 0:
            return
        window = Window(0, self.rows_written, self.grid.width, count)
        for name, path in self._files().items():
            with rasterio.open(path, "r+") as dataset:
                dataset.write(self._pending[name][:count], 1, window=window)
            self._pending[name] = self._pending[name][count:].copy()
        self.rows_written += count
        self._save_record()  # only after the files are closed: the record never runs ahead of the data

    @property
    def complete(self) -> bool:
        """Whether every row has been written."""
        return self.rows_written == self.grid.height

    def remove(self) -> None:
        """Delete the temporary files (after publishing); the record goes first so no run resumes from half."""
        for path in (self.paths.record, self.paths.classes, self.paths.confidence, self.paths.reliability):
            path.unlink(missing_ok=True)
            Path(f"{path}.aux.xml").unlink(missing_ok=True)


def _create_gtiff(
    path: Path,
    grid: SceneGrid,
    nodata: int,
    description: str,
    tags: dict[str, str],
    colormap: dict[int, tuple[int, int, int, int]] | None,
) -> None:
    """An empty tiled uint8 GeoTIFF on ``grid``; blocks not yet written read as ``nodata`` (sparse file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=grid.width,
        height=grid.height,
        count=1,
        dtype="uint8",
        crs=grid.crs,
        transform=grid.transform,
        nodata=nodata,
        tiled=True,
        blockxsize=PARTIAL_BLOCK,
        blockysize=PARTIAL_BLOCK,
        compress="deflate",
        sparse_ok=True,
        bigtiff="if_safer",
    ) as dataset:
        dataset.set_band_description(1, description)
        dataset.update_tags(**tags)
        if colormap:
            dataset.write_colormap(1, colormap)
