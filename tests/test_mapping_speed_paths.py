"""The faster mapping paths give what the paths before them gave (no timings here: see benchmarks/).

Tiles read straight into reused batch slots and blending without a temporary must produce the map the
stacking path produced, byte for byte; the export's spelled-out softmax must match ``probabilities``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from cloudlulc import schema
from cloudlulc.data.synthetic_scene import make_scene
from cloudlulc.export.onnx import ServingModel, onnxruntime_runner, threads_per_call
from cloudlulc.io.rasters import RasterProfile, write_raster
from cloudlulc.mapping import SceneReader, map_scene, region
from cloudlulc.mapping.options import MapOptions
from cloudlulc.mapping.tiling import pad_to_tile

UTM32, UTM33 = CRS.from_epsg(32632), CRS.from_epsg(32633)
TRANSFORM = from_origin(700_000.0, 5_000_000.0, 10, 10)


@pytest.fixture(scope="module")
def warped_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A 300 x 420 optical scene (UTM 32N, with a nodata hole) and its SAR on UTM 33N at 20 m."""
    folder = tmp_path_factory.mktemp("speed")
    scene = make_scene(np.random.default_rng(3), 420)
    dn = schema.reflectance_to_s2_dn(scene.cloudy[:, :300], -1000)
    dn[:, :20, :30] = 0
    tags = [{"BOA_ADD_OFFSET": "-1000"}] * 12
    optical, sar = folder / "s2.tif", folder / "s1.tif"
    write_raster(str(optical), dn, RasterProfile(UTM32, TRANSFORM, nodata=0, band_tags=tags))
    left, bottom, right, top = transform_bounds(UTM32, UTM33, 700_000.0, 4_997_000.0, 704_200.0, 5_000_000.0)
    sar_transform = from_origin(left - 100, top + 100, 20, 20)  # UTM 33N at 20 m, covering the optics
    shape = (2, int((top - bottom) / 20) + 10, int((right - left) / 20) + 10)
    db = np.random.default_rng(4).normal(-12, 3, shape).astype(np.float32)
    write_raster(str(sar), db, RasterProfile(UTM33, sar_transform, nodata=float("nan")))
    return str(optical), str(sar)


def smooth_predictor(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
    """A deterministic function of the inputs with class probabilities that vary over the tile."""
    features = np.concatenate([optical[:, :3], sar, optical[:, 6:7]], axis=1)
    logits = 4 * features - features.mean(axis=(2, 3), keepdims=True)
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (exponentials / exponentials.sum(axis=1, keepdims=True)).astype(np.float32)


def stacking_submit(scene: Any, grid: Any, tiles: Any, predictor: Any, pool: Any, buffers: Any = None) -> Any:
    """The path before batch slots: per-tile arrays, stacked into a fresh batch."""
    optical, sar, valid = [], [], []
    for _, row, col in tiles:
        rows, cols = grid.tile_shape(row, col)
        inputs = scene.read(Window(col, row, cols, rows))
        optical.append(pad_to_tile(inputs.optical, grid.tile))
        sar.append(pad_to_tile(inputs.sar, grid.tile))
        valid.append(inputs.valid)
    if not any(v.any() for v in valid):
        return region._Batch(tiles, valid, None)
    return region._Batch(tiles, valid, pool.submit(predictor, np.stack(optical), np.stack(sar)))


def temporary_add(self: Any, row: int, col: int, probabilities: Any, weights: Any, valid: Any) -> None:
    """The blending before the reused buffer: a temporary product per tile."""
    skip = max(0, self.top - row)
    rows = probabilities.shape[1] - skip
    if rows <= 0:
        return
    first = row + skip - self.top
    cols = slice(col, col + probabilities.shape[2])
    self.sums[:, first : first + rows, cols] += probabilities[:, skip:] * weights[skip:]
    self.weights[first : first + rows, cols] += weights[skip:]
    self.valid[first : first + rows, cols] = valid[skip:]


def read_all(path: str) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read()


@pytest.mark.parametrize(
    "options",
    [
        MapOptions(tile=128, overlap=32, batch_size=3, in_flight=2),
        MapOptions(tile=128, overlap=32, batch_size=1, in_flight=1),
        MapOptions(tile=512, overlap=64, batch_size=2, in_flight=2),  # larger than the scene: padded
    ],
)
def test_batch_slots_give_the_stacking_paths_map(warped_pair, tmp_path: Path, monkeypatch, options: MapOptions):
    optical, sar = warped_pair
    new = map_scene(optical, sar, str(tmp_path / "new.tif"), smooth_predictor, options=options, progress=False)
    monkeypatch.setattr(region, "_submit", stacking_submit)
    monkeypatch.setattr(region.BandAccumulator, "add", temporary_add)
    old = map_scene(optical, sar, str(tmp_path / "old.tif"), smooth_predictor, options=options, progress=False)
    assert new.tiles_predicted == old.tiles_predicted > 0
    np.testing.assert_array_equal(read_all(new.map_uri), read_all(old.map_uri))
    assert (read_all(new.map_uri) != schema.IGNORE_INDEX).any()


def test_reading_into_slots_gives_the_same_inputs(warped_pair):
    with SceneReader(*warped_pair) as scene:
        window = Window(17, 9, 128, 96)
        plain = scene.read(window)
        slots = np.full((12, 96, 128), -1, np.float32), np.full((2, 96, 128), -1, np.float32)
        filled = scene.read(window, out=slots)
    assert filled.optical is slots[0] and filled.sar is slots[1]
    np.testing.assert_array_equal(filled.optical, plain.optical)
    np.testing.assert_array_equal(filled.sar, plain.sar)
    np.testing.assert_array_equal(filled.valid, plain.valid)


def test_serving_softmax_matches_the_networks_probabilities():
    from cloudlulc.models.config import model_config
    from cloudlulc.models.networks import build_model

    torch.manual_seed(0)
    network = build_model(model_config("cloudlulc_net", "tiny")).eval()
    network.temperature.fill_(1.7)
    optical, sar = torch.rand(2, 12, 64, 64), torch.rand(2, 2, 64, 64)
    with torch.no_grad():
        expected = network.probabilities(optical, sar)
        served = ServingModel(network)(optical, sar)
    torch.testing.assert_close(served, expected, atol=1e-6, rtol=1e-5)
    assert torch.equal(served.argmax(dim=1), expected.argmax(dim=1))


def test_session_options_are_checked_and_threads_shared_out(tmp_path: Path):
    assert threads_per_call(1) >= 1
    assert threads_per_call(10_000) == 1
    with pytest.raises(ValueError, match="optimization"):
        onnxruntime_runner(tmp_path / "missing.onnx", optimization="fastest")
