"""Map a whole scene with any prediction function: tiles in, blended class map (COG) out, resumable.

The scene is processed in horizontal bands of tile rows. Only one band of weighted probabilities is
held (``classes x tile x width`` floats), so memory does not grow with the scene's height. Batches of
tiles go to the predictor through a small thread pool (``in_flight`` at a time) while the next batch
is read; results are accumulated strictly in submission order, so the floating-point sums, and hence
the map, are the same whatever the timing. Batches are a fixed partition of the row-major tile list,
so a resumed run sends the predictor exactly the batches an uninterrupted run would have.

Resume: rows are final once no later tile row touches them; whole block rows of them are written to
the temporary GeoTIFF and recorded (``writer.PartialMap``). A rerun with the same inputs and
parameters restarts at the first tile row that reaches past the rows already written, recomputing the
overlap it needs, and produces the same pixels as an uninterrupted run.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from cloudlulc import schema
from cloudlulc.errors import DataError
from cloudlulc.io.claim import claim_output
from cloudlulc.io.gdal_env import bounded_block_cache
from cloudlulc.io.guard import check_outputs_apart, probe_readable, probe_writable
from cloudlulc.io.rasters import publish_cog
from cloudlulc.io.storage import is_s3_uri, remove_stale_temporaries
from cloudlulc.logs import Progress
from cloudlulc.mapping.areas import ClassAreas, class_areas, write_class_areas
from cloudlulc.mapping.options import DEFAULT_MAP_OPTIONS, MapOptions
from cloudlulc.mapping.quicklook import QUICKLOOK_SIDE, write_quicklook
from cloudlulc.mapping.scene_pair import SarUnits, SceneReader
from cloudlulc.mapping.tiling import TileGrid, blend_weights, pad_to_tile
from cloudlulc.mapping.writer import SCORE_NODATA, PartialMap, work_paths

log = logging.getLogger(__name__)

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``predictor(optical [B,12,T,T], sar [B,2,T,T]) -> probabilities [B,6,T,T]``, all float32, inputs scaled
as the training dataset scales them (``cloudlulc.io.sentinel``). A map with a reliability band needs a
predictor that appends ORM's input-resolution reliability as a 7th channel ([B,7,T,T])."""

TileRef = tuple[int, int, int]  # (tile row, scene row, scene col)


@dataclass(frozen=True)
class MapResult:
    """What a mapping run produced, and how much of it this run computed."""

    map_uri: str
    confidence_uri: str | None
    reliability_uri: str | None
    areas_uri: str
    quicklook_uri: str
    width: int
    height: int
    tiles: int
    tiles_predicted: int
    resumed_from_row: int
    areas: ClassAreas
    seconds: float


def sidecar_uris(out_uri: str) -> dict[str, str]:
    """URIs of the files written beside the map ``<stem>.tif``: confidence COG, areas JSON, quicklook PNG."""
    base = out_uri[: -len(".tif")] if out_uri.lower().endswith(".tif") else out_uri
    return {
        "confidence": f"{base}_confidence.tif",
        "reliability": f"{base}_reliability.tif",
        "areas": f"{base}_areas.json",
        "quicklook": f"{base}_quicklook.png",
    }


class BandAccumulator:
    """Weighted class probabilities of the scene rows ``[top, top + capacity)``, full width.

    Rows leave from the top (:meth:`pop`) once final; the rest moves up, so the buffer never holds more
    than one tile row of rows.
    """

    def __init__(self, width: int, capacity: int, top: int, channels: int = schema.NUM_CLASSES) -> None:
        self.top = top
        self.sums = np.zeros((channels, capacity, width), np.float32)
        self.weights = np.zeros((capacity, width), np.float32)
        self.valid = np.zeros((capacity, width), bool)
        self._scratch = np.empty((0, 0, 0), np.float32)  # weighted probabilities of one tile, reused

    def add(self, row: int, col: int, probabilities: np.ndarray, weights: np.ndarray, valid: np.ndarray) -> None:
        """Add one tile's probabilities [6(+1),h,w] with its blending weights [h,w]; rows above ``top`` are dropped."""
        skip = max(0, self.top - row)
        rows = probabilities.shape[1] - skip
        if rows <= 0:
            return
        first = row + skip - self.top
        if first + rows > self.weights.shape[0]:
            raise ValueError(f"tile at row {row} reaches past the accumulator (top {self.top})")
        cols = slice(col, col + probabilities.shape[2])
        if any(have < need for have, need in zip(self._scratch.shape, probabilities.shape, strict=True)):
            self._scratch = np.empty(probabilities.shape, np.float32)
        weighted = self._scratch[: probabilities.shape[0], :rows, : probabilities.shape[2]]
        np.multiply(probabilities[:, skip:], weights[skip:], out=weighted)  # no temporary per tile
        self.sums[:, first : first + rows, cols] += weighted
        self.weights[first : first + rows, cols] += weights[skip:]
        self.valid[first : first + rows, cols] = valid[skip:]

    def pop(self, until: int, *, bands: tuple[str, ...] = ()) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Classes (uint8, 255 where inputs have no data) of rows ``[top, until)`` and the requested score bands.

        Score bands are 1-255 (0 = nodata): ``confidence`` is the blended top-class probability,
        ``reliability`` the blended 7th channel (ORM's reliability).
        """
        count = until - self.top
        sums, weights, valid = self.sums[:, :count], self.weights[:count], self.valid[:count]
        classes = np.argmax(sums[: schema.NUM_CLASSES], axis=0).astype(np.uint8)
        classes[~valid] = schema.IGNORE_INDEX
        scores: dict[str, np.ndarray] = {}
        for name in bands:
            blended = sums[: schema.NUM_CLASSES].max(axis=0) if name == "confidence" else sums[schema.NUM_CLASSES]
            with np.errstate(invalid="ignore", divide="ignore"):
                value = np.where(valid, blended / weights, 0.0)
            score = np.clip(np.rint(value * 255.0), 1, 255).astype(np.uint8)
            score[~valid] = SCORE_NODATA
            scores[name] = score
        for array in (self.sums, self.weights, self.valid):  # move the remaining rows up, clear the tail
            array[..., : array.shape[-2] - count, :] = array[..., count:, :]
            array[..., array.shape[-2] - count :, :] = 0
        self.top = until
        return classes, scores


def _check_probabilities(result: np.ndarray, count: int, tile: int, channels: int) -> np.ndarray:
    expected = (count, channels, tile, tile)
    array = np.asarray(result)
    if array.shape != expected:
        what = "class probabilities" + (" and reliability" if channels > schema.NUM_CLASSES else "")
        raise ValueError(f"predictor returned shape {array.shape}, expected {expected} ({what})")
    return array.astype(np.float32, copy=False)


# Over 60 lines only for its public signature and argument docs; the body is under 30 lines of named phases.
def map_scene(
    optical_uri: str | None,
    sar_uri: str | None,
    out_uri: str,
    predictor: Predictor,
    *,
    options: MapOptions = DEFAULT_MAP_OPTIONS,
    confidence: bool = False,
    reliability: bool = False,
    progress: bool = True,
    sar_units: SarUnits = "auto",
    model_id: str | None = None,
    work_dir: str | Path | None = None,
) -> MapResult:
    """Map a Sentinel-2 scene and its Sentinel-1 pair into a class COG, with areas and a quicklook beside it.

    Args:
        optical_uri: Sentinel-2 L2A GeoTIFF (12 bands, DN); defines the output grid. Local or ``s3://``.
            None maps from Sentinel-1 only (on the SAR file's grid).
        sar_uri: Sentinel-1 GeoTIFF (VV, VH; dB or linear power) in any CRS, resolution and extent. None
            maps from Sentinel-2 only. A missing modality is fed as zeros, so the model should have been
            trained with ``modality_dropout``; the map's ``CLOUDLULC_MODALITIES`` tag says what it saw.
        out_uri: the class map COG (``.tif``), local or ``s3://``. Beside it: ``<stem>_areas.json``,
            ``<stem>_quicklook.png`` and, with ``confidence``, ``<stem>_confidence.tif``.
        predictor: class probabilities for batches of tiles (see :data:`Predictor`).
        options: tile size, overlap, tiles per predictor call and calls in flight (see :class:`MapOptions`).
        confidence: also write the blended maximum probability, scaled to 1-255 (0 = nodata), as a
            separate single-band COG (its overviews average, the class map's take the mode).
        reliability: also write ORM's input-resolution reliability of the optics, blended like the
            probabilities and scaled to 1-255 (0 = nodata), as ``<stem>_reliability.tif``; the
            predictor must return it as a 7th channel.
        progress: show a progress bar over tiles.
        sar_units: how the SAR file stores sigma0; ``"auto"`` decides from metadata or values.
        model_id: name/version of the model behind ``predictor``; recorded, and checked on resume.
        work_dir: folder for the temporary map and progress record; default beside a local output, or a
            per-output folder under the system's temporary directory for ``s3://``.

    Returns:
        Where everything was written, class areas, and how many tiles this run predicted.

    Raises:
        DataError: unreadable, malformed or non-overlapping inputs, a scene without data, or an
            unfinished run of other inputs or parameters at the same output.
    """
    started = time.perf_counter()
    sidecars = _check_request(optical_uri, sar_uri, out_uri)
    bands = tuple(name for name, wanted in (("confidence", confidence), ("reliability", reliability)) if wanted)
    with claim_output(out_uri), bounded_block_cache(), SceneReader(optical_uri, sar_uri, sar_units=sar_units) as scene:
        grid = TileGrid(scene.grid.height, scene.grid.width, options.tile, options.overlap)
        identity = _run_identity(scene, grid, batch_size=options.batch_size, bands=bands, model_id=model_id)
        tags = _map_tags(scene, grid, optical_uri, sar_uri, model_id)
        paths = work_paths(out_uri, work_dir)
        partial = PartialMap.open(paths, scene.grid, identity, bands=bands, tags=tags)
        resumed_from = partial.rows_written
        if resumed_from:
            log.info("%s: resuming at row %d of %d", out_uri, resumed_from, scene.grid.height)
        predicted = 0
        if not partial.complete:
            scene.gather_overview(QUICKLOOK_SIDE)
            with bounded_block_cache(scene.tile_row_cache_mb(options.tile)):
                predicted = _predict_rows(
                    scene, grid, partial, predictor, options.batch_size, options.in_flight, progress
                )
        areas = _publish(scene, partial, out_uri, sidecars, optical_uri=optical_uri, sar_uri=sar_uri)
    return MapResult(
        map_uri=out_uri,
        confidence_uri=sidecars["confidence"] if confidence else None,
        reliability_uri=sidecars["reliability"] if reliability else None,
        areas_uri=sidecars["areas"],
        quicklook_uri=sidecars["quicklook"],
        width=scene.grid.width,
        height=scene.grid.height,
        tiles=grid.tile_count,
        tiles_predicted=predicted,
        resumed_from_row=resumed_from,
        areas=areas,
        seconds=time.perf_counter() - started,
    )


def _check_request(optical_uri: str | None, sar_uri: str | None, out_uri: str) -> dict[str, str]:
    """Refuse a request that cannot succeed before any tile is read; the sidecar URIs of its output.

    Raises:
        ValueError: an output that is not a ``.tif``, or neither modality given.
        UsageError: an output that overwrites an input.
        DataError: an input that cannot be read.
        StorageError: an output that cannot be written.
    """
    if not out_uri.lower().endswith(".tif"):
        raise ValueError(f"out_uri must name a .tif file, got {out_uri}")
    sidecars = sidecar_uris(out_uri)
    if optical_uri is None and sar_uri is None:
        raise ValueError("give a Sentinel-2 scene, a Sentinel-1 file, or both")
    check_outputs_apart({"out_uri": out_uri, **sidecars}, files={"optical_uri": optical_uri, "sar_uri": sar_uri})
    if optical_uri is not None:
        probe_readable(optical_uri, "Sentinel-2 scene")
    if sar_uri is not None:
        probe_readable(sar_uri, "Sentinel-1 file")
    probe_writable(out_uri, "map output")
    return sidecars


def _run_identity(
    scene: SceneReader, grid: TileGrid, *, batch_size: int, bands: tuple[str, ...], model_id: str | None
) -> dict[str, object]:
    """What a resumed run must share with the interrupted one: inputs, grid, parameters and model."""
    parameters: dict[str, object] = {"tile": grid.tile, "overlap": grid.overlap, "batch_size": batch_size}
    parameters["confidence"] = "confidence" in bands
    if "reliability" in bands:
        parameters["reliability"] = True  # only when asked, so runs recorded before the band still resume
    return {
        "inputs": scene.fingerprint(),
        "grid": {"width": scene.grid.width, "height": scene.grid.height},
        "parameters": parameters,
        "model_id": model_id,
    }


def _map_tags(
    scene: SceneReader, grid: TileGrid, optical_uri: str | None, sar_uri: str | None, model_id: str | None
) -> dict[str, str]:
    """GeoTIFF metadata of the class map: legend, nodata, inputs and modalities seen, model and tiling."""
    return {
        "CLOUDLULC_CLASSES": ";".join(f"{c.id}={c.name}" for c in schema.CLASSES),
        "CLOUDLULC_NODATA": str(schema.IGNORE_INDEX),
        "CLOUDLULC_OPTICAL": optical_uri or "none",
        "CLOUDLULC_SAR": sar_uri or "none",
        "CLOUDLULC_MODALITIES": scene.modalities,
        "CLOUDLULC_MODEL": model_id or "",
        "CLOUDLULC_TILING": f"tile={grid.tile} overlap={grid.overlap}",
    }


def _publish(
    scene: SceneReader,
    partial: PartialMap,
    out_uri: str,
    sidecars: dict[str, str],
    *,
    optical_uri: str | None,
    sar_uri: str | None,
) -> ClassAreas:
    """Publish the finished map, its score bands, areas and quicklook, then drop the work files.

    Raises:
        DataError: no pixel of the scene holds data (the work files are dropped first: nothing to resume).
    """
    areas = class_areas(str(partial.paths.classes))
    if areas.mapped_pixels == 0:
        partial.remove()
        if optical_uri is None or sar_uri is None:
            raise DataError(str(optical_uri or sar_uri), "no pixel holds data: nothing to map")
        raise DataError(sar_uri, f"no pixel of {optical_uri} has both optical and SAR data: nothing to map")
    publish_cog(partial.paths.classes, out_uri, overview_resampling="mode")
    for name in partial.bands:
        publish_cog(partial.paths.band(name), sidecars[name], overview_resampling="average")
    write_class_areas(areas, sidecars["areas"])
    write_quicklook(scene, out_uri, sidecars["quicklook"])
    if scene.modalities != "S2+S1":
        log.warning("%s: mapped from %s (the missing modality fed as zeros)", out_uri, scene.modalities)
    partial.remove()
    for folder in {partial.paths.record.parent, *([] if is_s3_uri(out_uri) else [Path(out_uri).parent])}:
        remove_stale_temporaries(folder)  # temporary files of killed runs (their writer pid is gone)
    return areas


@dataclass
class _Batch:
    tiles: list[TileRef]
    valid: list[np.ndarray]  # per tile, [h,w] inside the scene
    future: Future[np.ndarray] | None  # None when every tile of the batch is nodata


class _TileRowBlender:
    """Takes predicted batches in submission order, blends their tiles and hands rows to the writer once final.

    Strict submission order keeps the floating-point sums, and so the map, independent of thread timing.
    """

    def __init__(self, scene: SceneReader, grid: TileGrid, partial: PartialMap, first_row: int) -> None:
        self.grid = grid
        self.partial = partial
        self.first_row = first_row
        self.tile_row = first_row
        self.predicted = 0
        self.weights = blend_weights(grid.tile, grid.overlap)
        self.channels = schema.NUM_CLASSES + int("reliability" in partial.bands)
        capacity = min(grid.tile, scene.grid.height)  # one tile row of scene rows
        self.accumulator = BandAccumulator(scene.grid.width, capacity, grid.row_origins[first_row], self.channels)

    def consume(self, batch: _Batch, bar: Progress) -> None:
        """Blend one batch's tiles; rows above a new tile row are final and written first."""
        probabilities = None
        if batch.future is not None:
            result = batch.future.result()
            probabilities = _check_probabilities(result, len(batch.tiles), self.grid.tile, self.channels)
            self.predicted += len(batch.tiles)
        for index, ((tile_row, row, col), valid) in enumerate(zip(batch.tiles, batch.valid, strict=True)):
            bar.update(1)
            if tile_row < self.first_row:
                continue  # recomputed only to keep batches identical; its rows are all written
            if tile_row > self.tile_row:
                _flush(self.accumulator, self.partial, self.grid.row_origins[tile_row])
                self.tile_row = tile_row
            if probabilities is None:
                continue  # nodata tile: its pixels stay invalid in the accumulator
            rows, cols = valid.shape
            weights = self.weights[:rows, :cols]
            self.accumulator.add(row, col, probabilities[index, :, :rows, :cols], weights, valid)

    def finish(self, height: int) -> None:
        """Write the rows still held: the scene's last tile row is complete."""
        _flush(self.accumulator, self.partial, height)


def _predict_rows(
    scene: SceneReader,
    grid: TileGrid,
    partial: PartialMap,
    predictor: Predictor,
    batch_size: int,
    in_flight: int,
    progress: bool,
) -> int:
    """Predict, blend and write every tile row from the first one the partial map still needs; tiles predicted.

    Reading stays in this thread (GDAL handles are not shared) while up to ``in_flight`` batches predict.
    """
    tiles = grid.tiles()
    first_row = grid.first_tile_row_reaching(partial.rows_written)
    first_batch = first_row * len(grid.col_origins) // batch_size
    blender = _TileRowBlender(scene, grid, partial, first_row)
    bar = Progress(  # a bar on a terminal, else a line per tenth of the tiles with the scene's Mpx/s
        len(tiles),
        initial=first_batch * batch_size,
        desc="mapping",
        unit="tile",
        requested=progress,
        logger=log,
        pixels_per_unit=scene.grid.width * scene.grid.height / max(len(tiles), 1),
    )
    pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="predictor")
    pending: deque[_Batch] = deque()
    buffers = _BatchBuffers(in_flight + 1, batch_size, grid.tile)
    try:
        for start in range(first_batch * batch_size, len(tiles), batch_size):
            pending.append(_submit(scene, grid, tiles[start : start + batch_size], predictor, pool, buffers))
            while len(pending) > in_flight:
                blender.consume(pending.popleft(), bar)
        while pending:
            blender.consume(pending.popleft(), bar)
        blender.finish(scene.grid.height)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return blender.predicted


class _BatchBuffers:
    """Input arrays of the batches alive at once (``in_flight`` predicting, one being read), used in turn.

    Tiles are read straight into their batch's slot: no per-tile arrays stacked into a fresh batch (a
    copy of 56 MB per batch of 4, and its page faults). Batch ``k`` reuses the arrays of batch
    ``k - in_flight - 1``, which the blender has consumed (its prediction returned) before ``k`` is read.
    """

    def __init__(self, count: int, batch_size: int, tile: int) -> None:
        shapes = (
            (batch_size, len(schema.S2_BANDS), tile, tile),
            (batch_size, len(schema.S1_POLARISATIONS), tile, tile),
        )
        self.arrays = [tuple(np.empty(shape, np.float32) for shape in shapes) for _ in range(count)]
        self.turn = 0

    def take(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The next batch's optical [count,12,T,T] and SAR [count,2,T,T] arrays (contents undefined)."""
        optical, sar = self.arrays[self.turn]
        self.turn = (self.turn + 1) % len(self.arrays)
        return optical[:count], sar[:count]


def _submit(
    scene: SceneReader,
    grid: TileGrid,
    tiles: list[TileRef],
    predictor: Predictor,
    pool: ThreadPoolExecutor,
    buffers: _BatchBuffers,
) -> _Batch:
    """Read a batch of tiles (in this thread: GDAL handles are not shared) and start its prediction."""
    optical, sar = buffers.take(len(tiles))
    valid = []
    for index, (_, row, col) in enumerate(tiles):
        rows, cols = grid.tile_shape(row, col)
        if (rows, cols) == (grid.tile, grid.tile):
            inputs = scene.read(Window(col, row, cols, rows), out=(optical[index], sar[index]))
        else:  # a scene smaller than a tile: read, then pad into the slot
            inputs = scene.read(Window(col, row, cols, rows))
            optical[index], sar[index] = pad_to_tile(inputs.optical, grid.tile), pad_to_tile(inputs.sar, grid.tile)
        valid.append(inputs.valid)
    if not any(v.any() for v in valid):
        return _Batch(tiles, valid, None)
    return _Batch(tiles, valid, pool.submit(predictor, optical, sar))


def _flush(accumulator: BandAccumulator, partial: PartialMap, until: int) -> None:
    """Hand the final rows ``[top, until)`` to the writer."""
    if until <= accumulator.top:
        return
    first = accumulator.top
    classes, scores = accumulator.pop(until, bands=partial.bands)
    partial.append(first, classes, scores)
