"""Regional mapping: seam agreement (tiled versus one whole-image pass) and peak memory versus scene size.

(a) Seams. A synthetic scene (``cloudlulc.data.synthetic_scene``) is mapped tile by tile with the in-process tiny
CloudLULC-Net, briefly fitted to that scene so that its map is not one class, and compared with a
single pass over the whole image. The figure mixes two things: seams from tiling (what blending must
remove) and the model's dependence on tile context; CHOI and USMT pool statistics over the whole
input, so a second row switches them off to show the share that is the model's. A third row uses a
plain conv net whose receptive field fits in the overlap, where only tiling can cause disagreement.

(b) Memory. ``map_scene`` runs in a fresh subprocess per scene size, on inputs generated window by
window (the optics on UTM 32N at 10 m, the SAR on UTM 33N at 20 m, so the warp is exercised), and
reports the process's peak resident memory. Target: peak(largest) / peak(smallest) <= 1.5.

Usage: python benchmarks/bench_mapping.py [--sizes 2048 8192] [--tile 512] [--overlap 64]
       [--seam-size 1024] [--fit-steps 120]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
import torch
from common import save
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import transform as transform_points
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from cloudlulc import schema
from cloudlulc.data.synthetic_scene import SAR_MEAN_DB, SPECTRA
from cloudlulc.mapping.options import MapOptions

OPTICAL_CRS, SAR_CRS = CRS.from_epsg(32632), CRS.from_epsg(32633)
ORIGIN = (700_000.0, 5_100_000.0)
STRIP = 256
TILED = {"tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate", "zlevel": 1, "bigtiff": "if_safer"}

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


def peak_rss_mb() -> float:
    """This process's peak resident memory since exec (VmHWM; ru_maxrss would carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- inputs written window by window -------------------------------------------------------------


def parcel_classes(easting: np.ndarray, northing: np.ndarray) -> np.ndarray:
    """A blocky land-cover pattern in map coordinates (so the optics and the SAR agree wherever they are)."""
    wobble = np.floor(2.5 * np.sin(easting / 900.0) + 2.5 * np.cos(northing / 700.0))
    return ((np.floor(easting / 730.0) * 7 + np.floor(northing / 530.0) * 3 + wobble) % 6).astype(np.int64)


def write_large_inputs(folder: Path, size: int) -> tuple[Path, Path]:
    """A size x size Sentinel-2 L2A scene and a Sentinel-1 dB file on another grid, a strip at a time."""
    rng = np.random.default_rng(size)
    optical_path, sar_path = folder / f"s2_{size}.tif", folder / f"s1_{size}.tif"
    transform = from_origin(*ORIGIN, 10, 10)
    options = {"driver": "GTiff", **TILED}
    with rasterio.open(
        optical_path,
        "w",
        width=size,
        height=size,
        count=12,
        dtype="uint16",
        crs=OPTICAL_CRS,
        transform=transform,
        nodata=0,
        **options,
    ) as dataset:
        dataset.update_tags(1, BOA_ADD_OFFSET="-1000")
        for row in range(0, size, STRIP):
            rows = min(STRIP, size - row)
            cols, lines = np.meshgrid(np.arange(size) + 0.5, np.arange(row, row + rows) + 0.5)
            easting, northing = transform @ (cols, lines)
            reflectance = SPECTRA[parcel_classes(easting, northing)].transpose(2, 0, 1)
            reflectance = reflectance * rng.normal(1.0, 0.04, reflectance.shape).astype(np.float32)
            dn = schema.reflectance_to_s2_dn(reflectance, schema.S2_BASELINE_OFFSET_DN)
            dataset.write(dn, window=Window(0, row, size, rows))
    with rasterio.open(optical_path) as dataset:
        write_sar_pair(sar_path, dataset.bounds, rng)
    return optical_path, sar_path


def write_sar_pair(sar_path: Path, optical_bounds: tuple[float, float, float, float], rng: np.random.Generator) -> None:
    """Sentinel-1 dB (VV, VH) on UTM 33N at 20 m covering ``optical_bounds`` (UTM 32N), a strip at a time."""
    left, bottom, right, top = transform_bounds(OPTICAL_CRS, SAR_CRS, *optical_bounds)
    sar_transform = from_origin(left - 100, top + 100, 20, 20)
    width, height = int((right - left + 200) / 20), int((top - bottom + 200) / 20)
    with rasterio.open(
        sar_path,
        "w",
        width=width,
        height=height,
        count=2,
        dtype="float32",
        crs=SAR_CRS,
        transform=sar_transform,
        nodata=float("nan"),
        driver="GTiff",
        **TILED,
    ) as dataset:
        dataset.descriptions = schema.S1_POLARISATIONS
        for row in range(0, height, STRIP):
            rows = min(STRIP, height - row)
            cols, lines = np.meshgrid(np.arange(width) + 0.5, np.arange(row, row + rows) + 0.5)
            xs, ys = sar_transform @ (cols.ravel(), lines.ravel())
            easting, northing = transform_points(SAR_CRS, OPTICAL_CRS, xs, ys)
            classes = parcel_classes(np.asarray(easting), np.asarray(northing)).reshape(rows, width)
            db = SAR_MEAN_DB[classes].transpose(2, 0, 1) + rng.normal(0.0, 1.0, (2, rows, width)).astype(np.float32)
            dataset.write(db.astype(np.float32), window=Window(0, row, width, rows))


def write_band_group(path: Path, bands: list[int], resolution: int, side_m: int, rng: np.random.Generator) -> None:
    """Optical bands ``bands`` (indexes into ``schema.S2_BANDS``) at ``resolution`` m, as an L2A product ships them."""
    size = side_m // resolution
    transform = from_origin(*ORIGIN, resolution, resolution)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": len(bands), "dtype": "uint16"}
    with rasterio.open(path, "w", **profile, **TILED, crs=OPTICAL_CRS, transform=transform, nodata=0) as dataset:
        dataset.update_tags(BOA_ADD_OFFSET="-1000")
        for row in range(0, size, STRIP):
            rows = min(STRIP, size - row)
            cols, lines = np.meshgrid(np.arange(size) + 0.5, np.arange(row, row + rows) + 0.5)
            easting, northing = transform @ (cols, lines)
            reflectance = SPECTRA[parcel_classes(easting, northing)][..., bands].transpose(2, 0, 1)
            reflectance = reflectance * rng.normal(1.0, 0.04, reflectance.shape).astype(np.float32)
            dn = schema.reflectance_to_s2_dn(reflectance, schema.S2_BASELINE_OFFSET_DN)
            dataset.write(dn, window=Window(0, row, size, rows))


def write_full_tile(folder: Path, side_m: int = 109_800) -> tuple[Path, Path]:
    """A Sentinel-2 tile (10980 x 10980 at 10 m) as three files at 10, 20 and 60 m, stacked by a VRT, and its SAR.

    The VRT lists the 12 bands in ``schema.S2_BANDS`` order at 10 m; GDAL resamples the 20 and 60 m
    bands (bilinear) as windows are read: the reader takes one 12-band raster, and a VRT is how a
    product's separate resolutions become one (``gdalbuildvrt -separate -resolution highest``).
    """
    rng = np.random.default_rng(side_m)
    groups = {}
    for resolution in (10, 20, 60):
        bands = [i for i, b in enumerate(schema.S2_BANDS) if schema.S2_BAND_RESOLUTION_M[b] == resolution]
        path = folder / f"s2_tile_{resolution}m.tif"
        write_band_group(path, bands, resolution, side_m, rng)
        groups[resolution] = (path, bands)
    size = side_m // 10
    sources = []
    for resolution, (path, bands) in groups.items():
        side = side_m // resolution
        for position, band in enumerate(bands):
            sources.append((band, path, position + 1, side))
    xml = [
        f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">',
        f"<SRS>{OPTICAL_CRS.to_wkt()}</SRS>",
        f"<GeoTransform>{ORIGIN[0]}, 10, 0, {ORIGIN[1]}, 0, -10</GeoTransform>",
        '<Metadata><MDI key="BOA_ADD_OFFSET">-1000</MDI></Metadata>',
    ]
    for band, path, index, side in sorted(sources):
        xml += [
            f'<VRTRasterBand dataType="UInt16" band="{band + 1}"><NoDataValue>0</NoDataValue>',
            f"<Description>{schema.S2_BANDS[band]}</Description>",
            f'<ComplexSource resampling="bilinear"><SourceFilename relativeToVRT="0">{path}</SourceFilename>',
            f"<SourceBand>{index}</SourceBand><NODATA>0</NODATA>",
            f'<SrcRect xOff="0" yOff="0" xSize="{side}" ySize="{side}"/>',
            f'<DstRect xOff="0" yOff="0" xSize="{size}" ySize="{size}"/></ComplexSource></VRTRasterBand>',
        ]
    optical_path = folder / "s2_tile.vrt"
    optical_path.write_text("\n".join([*xml, "</VRTDataset>"]) + "\n")
    sar_path = folder / "s1_tile.tif"
    with rasterio.open(optical_path) as dataset:
        write_sar_pair(sar_path, dataset.bounds, rng)
    return optical_path, sar_path


# --- predictors ----------------------------------------------------------------------------------


def torch_predictor(network: torch.nn.Module) -> Predictor:
    def predict(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(network(torch.from_numpy(optical), torch.from_numpy(sar)), dim=1).numpy()

    return predict


def tiny_network(**overrides: object) -> torch.nn.Module:
    from cloudlulc.models.config import model_config
    from cloudlulc.models.networks import build_model

    torch.manual_seed(0)
    return build_model(model_config("cloudlulc_net", "tiny", **overrides))


def local_network() -> torch.nn.Module:
    """Five 5x5 convolutions (receptive field 21 px): its prediction at a pixel depends on its neighbourhood only."""
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = [torch.nn.Conv2d(14, 16, 5, padding=2), torch.nn.Tanh()]
    for _ in range(3):
        layers += [torch.nn.Conv2d(16, 16, 5, padding=2), torch.nn.Tanh()]
    body = torch.nn.Sequential(*layers, torch.nn.Conv2d(16, 6, 5, padding=2))

    class Local(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body

        def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
            return 8 * self.body(10 * (torch.cat([optical, sar], dim=1) - 0.25))

    return Local().eval()


def fit(
    network: torch.nn.Module, optical: np.ndarray, sar: np.ndarray, label: np.ndarray, steps: int
) -> torch.nn.Module:
    """A short fit on random 128 px crops of the scene, so that the map is not a single class."""
    rng = np.random.default_rng(0)
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    crop = 128
    inputs = torch.from_numpy(optical), torch.from_numpy(sar), torch.from_numpy(label.astype(np.int64))
    network.train()
    for _ in range(steps):
        rows = rng.integers(0, label.shape[0] - crop, 4)
        cols = rng.integers(0, label.shape[1] - crop, 4)
        o, s, y = (
            torch.stack([a[..., r : r + crop, c : c + crop] for r, c in zip(rows, cols, strict=True)]) for a in inputs
        )
        loss = torch.nn.functional.cross_entropy(network(o, s), y, ignore_index=schema.IGNORE_INDEX)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return network.eval()


# --- (a) seams -----------------------------------------------------------------------------------


def seam_agreement(folder: Path, size: int, fit_steps: int, settings: list[tuple[int, int]]) -> dict[str, object]:
    from cloudlulc.data.synthetic_scene import make_scene
    from cloudlulc.io.rasters import RasterProfile, write_raster
    from cloudlulc.mapping import SceneReader, map_scene

    torch.set_num_threads(1)
    scene = make_scene(np.random.default_rng(11), size)
    transform = from_origin(*ORIGIN, 10, 10)
    optical_path, sar_path = folder / "seam_s2.tif", folder / "seam_s1.tif"
    write_raster(str(optical_path), schema.reflectance_to_s2_dn(scene.cloudy), RasterProfile(OPTICAL_CRS, transform))
    write_raster(str(sar_path), scene.sar_db, RasterProfile(OPTICAL_CRS, transform))
    with SceneReader(str(optical_path), str(sar_path)) as reader:
        whole = reader.read(Window(0, 0, size, size))
    models = {
        f"CloudLULC-Net tiny, fitted {fit_steps} steps": fit(
            tiny_network(), whole.optical, whole.sar, scene.label, fit_steps
        ),
        f"same without CHOI and USMT, fitted {fit_steps} steps": fit(
            tiny_network(use_choi=False, use_usmt=False), whole.optical, whole.sar, scene.label, fit_steps
        ),
        "local conv net (receptive field 21 px, random)": local_network(),
    }
    rows: dict[str, object] = {}
    for name, network in models.items():
        predict = torch_predictor(network)
        reference = predict(whole.optical[None], whole.sar[None])[0].argmax(axis=0)
        shares = np.bincount(reference.ravel(), minlength=schema.NUM_CLASSES) / reference.size
        row: dict[str, object] = {
            "class_shares_whole_image": [round(float(v), 3) for v in shares],
            "accuracy_whole_image": round(float((reference == scene.label).mean()), 3),
        }
        for tile, overlap in settings:
            result = map_scene(
                str(optical_path),
                str(sar_path),
                str(folder / f"seam_{tile}_{overlap}.tif"),
                predict,
                options=MapOptions(tile=tile, overlap=overlap),
                progress=False,
            )
            with rasterio.open(result.map_uri) as dataset:
                tiled = dataset.read(1)
            row[f"agreement_tile{tile}_overlap{overlap}"] = round(float((tiled == reference).mean()), 4)
        rows[name] = row
    return {
        "scene": f"{size}x{size} synthetic ({scene.archetype}, cloud {scene.target_cloud_cover:.0%})",
        "models": rows,
    }


# --- (b) memory ----------------------------------------------------------------------------------


def memory_child(optical: str, sar: str, out: str, tile: int, overlap: int) -> None:
    """Runs in its own process: build the model, warm it up (baseline), map, print peak RSS as JSON."""
    from cloudlulc.mapping import map_scene

    torch.set_num_threads(1)
    predict = torch_predictor(tiny_network().eval())
    predict(np.zeros((4, 12, tile, tile), np.float32), np.zeros((4, 2, tile, tile), np.float32))
    baseline = peak_rss_mb()
    start = time.perf_counter()
    result = map_scene(
        optical,
        sar,
        out,
        predict,
        options=MapOptions(tile=tile, overlap=overlap, batch_size=4, in_flight=2),
        progress=False,
    )
    peak = peak_rss_mb()
    print(
        json.dumps(
            {
                "baseline_rss_mb": round(baseline, 1),
                "peak_rss_mb": round(peak, 1),
                "mapping_growth_mb": round(peak - baseline, 1),
                "seconds": round(time.perf_counter() - start, 1),
                "tiles": result.tiles,
            }
        )
    )


def memory_by_size(folder: Path, sizes: list[int], tile: int, overlap: int) -> dict[str, object]:
    rows: dict[str, object] = {}
    for size in sizes:
        start = time.perf_counter()
        optical, sar = write_large_inputs(folder, size)
        generated = time.perf_counter() - start
        command = [
            sys.executable,
            __file__,
            "--child",
            str(optical),
            str(sar),
            str(folder / f"map_{size}.tif"),
            "--tile",
            str(tile),
            "--overlap",
            str(overlap),
        ]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows[f"{size}x{size}"] = {
            **json.loads(output.strip().splitlines()[-1]),
            "inputs_written_s": round(generated, 1),
        }
        for path in (optical, sar):
            path.unlink()
    first, last = rows[f"{sizes[0]}x{sizes[0]}"], rows[f"{sizes[-1]}x{sizes[-1]}"]
    assert isinstance(first, dict) and isinstance(last, dict)
    return {
        "scenes": rows,
        "peak_rss_ratio": round(last["peak_rss_mb"] / first["peak_rss_mb"], 3),
        "pixel_ratio": (sizes[-1] / sizes[0]) ** 2,
        "target_peak_rss_ratio": 1.5,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--seam-size", type=int, default=1024)
    parser.add_argument("--fit-steps", type=int, default=120)
    parser.add_argument("--skip-seams", action="store_true", help="measure memory only")
    parser.add_argument("--child", nargs=3, metavar=("OPTICAL", "SAR", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        memory_child(*args.child, tile=args.tile, overlap=args.overlap)
        return
    with tempfile.TemporaryDirectory(prefix="bench-mapping-") as folder:
        seams = (
            None
            if args.skip_seams
            else seam_agreement(Path(folder), args.seam_size, args.fit_steps, [(512, 64), (256, 64), (128, 32)])
        )
        memory = memory_by_size(Path(folder), args.sizes, args.tile, args.overlap)
    command = (
        f"python benchmarks/bench_mapping.py --sizes {' '.join(map(str, args.sizes))} --tile {args.tile} "
        f"--overlap {args.overlap} --seam-size {args.seam_size} --fit-steps {args.fit_steps}"
        f"{' --skip-seams' if args.skip_seams else ''}"
    )
    save("mapping", {"command": command, "seams": seams, "memory": memory})


if __name__ == "__main__":
    main()
