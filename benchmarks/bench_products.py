"""Regional product cost: mosaicking 4 overlapping scene maps against mapping the scenes, time and memory.

Four synthetic 2048 x 2048 scene pairs (12-band L2A optics with a cloud mask, SAR in dB) lie on a 2 x 2
layout with 25 % overlap (offsets of 1536 px), over a 3584 x 3584 px region. Each phase runs in its own
fresh process, so its peak resident memory is its own:

- map: the four scenes mapped with the in-process tiny CloudLULC-Net (untrained: speed does not
  depend on the weights), with their confidence bands, as the regional pipeline maps them;
- one scene: one of them mapped alone (the memory reference);
- product: the best-observation mosaic of the four maps over the AOI plus its geodesic class areas.

Targets (issue 16): (map + product) / map <= 1.3, and peak(product) <= 1.2 x peak(one scene).

Usage: python benchmarks/bench_products.py [--size 2048] [--tile 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from bench_mapping import parcel_classes, peak_rss_mb
from common import save
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import transform_geom
from rasterio.windows import Window
from shapely.geometry import box, mapping

from cloudlulc import schema
from cloudlulc.data.synthetic_scene import SAR_MEAN_DB, SPECTRA

CRS_UTM = CRS.from_epsg(32632)
ORIGIN = (700_000.0, 5_100_000.0)
STRIP = 256


def scene_origin(index: int, size: int) -> tuple[float, float]:
    """Upper-left corner of scene ``index`` of the 2 x 2 layout (25 % overlap)."""
    step = 10.0 * size * 3 // 4
    return ORIGIN[0] + step * (index % 2), ORIGIN[1] - step * (index // 2)


def write_scene(folder: Path, index: int, size: int) -> dict[str, str]:
    """One scene pair (optics, SAR, cloud mask) written a strip at a time."""
    rng = np.random.default_rng(index)
    transform = from_origin(*scene_origin(index, size), 10, 10)
    paths = {name: str(folder / f"scene{index}_{name}.tif") for name in ("optical", "sar", "cloud")}
    common = {"driver": "GTiff", "width": size, "height": size, "crs": CRS_UTM, "transform": transform, "tiled": True}
    with (
        rasterio.open(paths["optical"], "w", count=12, dtype="uint16", nodata=0, **common) as optical,
        rasterio.open(paths["sar"], "w", count=2, dtype="float32", nodata=float("nan"), **common) as sar,
        rasterio.open(paths["cloud"], "w", count=1, dtype="uint8", **common) as cloud,
    ):
        optical.update_tags(1, BOA_ADD_OFFSET="-1000")
        for row in range(0, size, STRIP):
            rows = min(STRIP, size - row)
            cols, lines = np.meshgrid(np.arange(size) + 0.5, np.arange(row, row + rows) + 0.5)
            easting, northing = transform @ (cols, lines)
            classes = parcel_classes(easting, northing)
            reflectance = SPECTRA[classes].transpose(2, 0, 1) * rng.normal(1.0, 0.04, (12, rows, size))
            window = Window(0, row, size, rows)
            optical.write(schema.reflectance_to_s2_dn(reflectance.astype(np.float32), 1000), window=window)
            db = SAR_MEAN_DB[classes].transpose(2, 0, 1) + rng.normal(0.0, 1.0, (2, rows, size))
            sar.write(db.astype(np.float32), window=window)
            cloudy = (np.floor(easting / 2000) + np.floor(northing / 1700) + index) % 4 == 0
            cloud.write(np.where(cloudy, schema.CLOUD_OPAQUE, schema.CLOUD_CLEAR).astype(np.uint8)[None], window=window)
    return paths


def child_map(folder: str, suffix: str, indexes: list[int], tile: int, threads: int) -> dict[str, float]:
    """Map scenes ``indexes`` (in this process) to ``scene<i>_<suffix>.tif`` with confidence; seconds, peak memory."""
    import torch
    from bench_mapping import tiny_network, torch_predictor

    from cloudlulc.mapping import map_scene
    from cloudlulc.mapping.options import MapOptions

    torch.set_num_threads(threads)
    predict = torch_predictor(tiny_network().eval())
    predict(np.zeros((4, 12, tile, tile), np.float32), np.zeros((4, 2, tile, tile), np.float32))
    baseline = peak_rss_mb()
    started = time.perf_counter()
    for index in indexes:
        base = Path(folder) / f"scene{index}"
        map_scene(
            f"{base}_optical.tif",
            f"{base}_sar.tif",
            f"{base}_{suffix}.tif",
            predict,
            options=MapOptions(tile=tile, overlap=64, batch_size=4, in_flight=2),
            confidence=True,
            progress=False,
        )
    return {"seconds": time.perf_counter() - started, "peak_mb": peak_rss_mb(), "baseline_mb": baseline}


def child_product(folder: str, size: int) -> dict[str, float]:
    """Mosaic the four maps over the region and compute its areas; seconds and peak memory."""
    from cloudlulc.products.areas import product_areas
    from cloudlulc.products.mosaic import MappedScene, mosaic
    from cloudlulc.products.region import region_grid

    root = Path(folder)
    west, north = scene_origin(0, size)
    east, south = west + 10.0 * size * 7 // 4, north - 10.0 * size * 7 // 4
    aoi = root / "aoi.geojson"
    aoi.write_text(json.dumps(transform_geom(CRS_UTM, "EPSG:4326", mapping(box(west, south, east, north)))))
    scenes = [
        MappedScene(
            index + 1,
            str(root / f"scene{index}_map.tif"),
            str(root / f"scene{index}_map_confidence.tif"),
            str(root / f"scene{index}_optical.tif"),
            str(root / f"scene{index}_cloud.tif"),
        )
        for index in range(4)
    ]
    baseline = peak_rss_mb()
    started = time.perf_counter()
    region = region_grid(str(aoi), "EPSG:32632")
    outputs = {role: str(root / f"product_{role}.tif") for role in ("classes", "confidence", "source")}
    stats = mosaic(scenes, region, outputs)
    product_areas(outputs["classes"], region.grid, region.features)
    return {
        "seconds": time.perf_counter() - started,
        "peak_mb": peak_rss_mb(),
        "baseline_mb": baseline,
        "region_px": region.grid.width * region.grid.height,
        "mapped_px": stats.mapped_pixels,
    }


def run_child(args: argparse.Namespace, *arguments: str) -> dict[str, float]:
    settings = ["--size", str(args.size), "--tile", str(args.tile), "--threads", str(args.threads)]
    output = subprocess.run(
        [sys.executable, __file__, *settings, "--child", *arguments], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, folder, *rest = args.child
        result = (
            child_map(folder, rest[0], [int(i) for i in rest[1:]], args.tile, args.threads)
            if kind == "map"
            else child_product(folder, args.size)
        )
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="bench-products-") as folder:
        for index in range(4):
            write_scene(Path(folder), index, args.size)
        mapped = run_child(args, "map", folder, "map", "0", "1", "2", "3")
        one = run_child(args, "map", folder, "alone", "0")
        product = run_child(args, "product", folder)
    ratio = (mapped["seconds"] + product["seconds"]) / mapped["seconds"]
    save(
        "products",
        {
            "command": f"python benchmarks/bench_products.py --size {args.size} --tile {args.tile} "
            f"--threads {args.threads}",
            "scenes": f"4 x {args.size} x {args.size} px, 25 % overlap",
            "map_4_scenes_s": round(mapped["seconds"], 1),
            "product_s": round(product["seconds"], 1),
            "time_ratio_map_plus_product_over_map": round(ratio, 3),
            "peak_mb_map_one_scene": round(one["peak_mb"], 0),
            "peak_mb_product": round(product["peak_mb"], 0),
            "memory_ratio_product_over_one_scene": round(product["peak_mb"] / one["peak_mb"], 3),
            "region_px": product["region_px"],
            "mapped_px": product["mapped_px"],
        },
    )


if __name__ == "__main__":
    main()
