"""Ingest: chips per second and peak memory for scene pairs of growing size, and the cost of a rerun.

A static STAC catalog of one synthetic Sentinel-2 L2A scene (12 bands at 10/20/60 m + SCL) and one
Sentinel-1 scene in the neighbouring UTM zone (so the warp is exercised) is written per size, then
ingested into 512 x 512 chips with labels from the WorldCover-coded reference raster, each run in a
fresh subprocess that reports its own peak resident memory. Target: memory does not grow with scene
size (peak(largest) / peak(smallest) close to 1). The rerun of a finished output must only list and
read the index: its time is compared with the first run's, and every object's modification time is
checked unchanged.

Usage: python benchmarks/bench_ingest.py [--sizes 1024 2048 4096] [--chip 512]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from common import RESULTS, save


def peak_rss_mb() -> float:
    """Peak resident memory of this process, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(catalog_root: str, out: str, chip: int) -> None:
    """One ingest run in this process; prints its figures as JSON."""
    import shapely

    from cloudlulc.ingest.outputs import ChipOptions
    from cloudlulc.ingest.run import IngestOptions, ingest
    from cloudlulc.ingest.stac import SearchQuery

    info = json.loads((Path(catalog_root) / "bench.json").read_text())
    query = SearchQuery(shapely.box(*info["bbox"]), date(2026, 6, 1), date(2026, 6, 30), catalog=catalog_root)
    options = IngestOptions(out, chips=ChipOptions(chip_size=chip), label_source=info["labels"])
    start = time.perf_counter()
    report = ingest(query, options, progress=False)
    seconds = time.perf_counter() - start
    chips = sum(p.outputs for p in report.pairs)
    statuses = [p.status for p in report.pairs]
    figures = {"seconds": seconds, "chips": chips, "peak_rss_mb": peak_rss_mb(), "statuses": statuses}
    print(json.dumps({**figures, "index_written": list(report.index_written)}))


def run_child(catalog_root: Path, out: Path, chip: int) -> dict[str, object]:
    command = [sys.executable, __file__, "--child", str(catalog_root), str(out), "--chip", str(chip)]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def catalog_for(size: int, folder: Path) -> Path:
    """The benchmark catalog of one size, written once and reused."""
    from cloudlulc.ingest.synthetic import S1Spec, S2Spec, SyntheticCatalogConfig, write_synthetic_catalog

    root = folder / f"stac_{size}"
    if not (root / "bench.json").exists():
        config = SyntheticCatalogConfig(
            size=size, s2=(S2Spec("2026-06-10", cloud_cover=0.3),), s1=(S1Spec("2026-06-08", epsg=32632),)
        )
        catalog = write_synthetic_catalog(str(root), config, progress=True)
        (root / "bench.json").write_text(json.dumps({"bbox": catalog.bbox_wgs84, "labels": catalog.landcover_uri}))
    return root


def modification_times(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--chip", type=int, default=512)
    parser.add_argument("--child", nargs=2, metavar=("CATALOG", "OUT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.chip)
        return
    folder = RESULTS / "ingest"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        catalog_root = catalog_for(size, folder)
        out = folder / f"chips_{size}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        first = run_child(catalog_root, out, args.chip)
        before = modification_times(out)
        rerun = run_child(catalog_root, out, args.chip)
        unchanged = modification_times(out) == before
        rows.append(
            {
                "scene": f"{size} x {size}",
                "chips": first["chips"],
                "seconds": round(float(first["seconds"]), 2),  # type: ignore[arg-type]
                "chips_per_s": round(int(first["chips"]) / float(first["seconds"]), 2),  # type: ignore[call-overload, arg-type]
                "peak_rss_mb": round(float(first["peak_rss_mb"]), 1),  # type: ignore[arg-type]
                "rerun_seconds": round(float(rerun["seconds"]), 3),  # type: ignore[arg-type]
                "rerun_statuses": rerun["statuses"],
                "rerun_index_written": rerun["index_written"],
                "rerun_wrote_nothing": unchanged,
            }
        )
    result = {"chip": args.chip, "runs": rows}
    if len(rows) > 1:
        result["memory_ratio_largest_to_smallest"] = round(rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"], 3)  # type: ignore[operator]
    save("ingest", result)


if __name__ == "__main__":
    main()
