"""The synthetic STAC catalog (items in the public schemas, COG assets, truth) and the test HTTP file server."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import requests
from http_files import FileServer
from rasterio.windows import Window

from cloudlulc import schema
from cloudlulc.ingest.synthetic import (
    EARTH_SEARCH_BANDS,
    S1Spec,
    S2Spec,
    SyntheticCatalog,
    SyntheticCatalogConfig,
    ground_tile,
    optical_tile,
    s1_item_id,
    s2_item_id,
    write_synthetic_catalog,
)
from cloudlulc.io.rasters import raster_info
from cloudlulc.io.storage import open_storage

S2_KEYS = {
    "coastal",
    "blue",
    "green",
    "red",
    "rededge1",
    "rededge2",
    "rededge3",
    "nir",
    "nir08",
    "nir09",
    "swir16",
    "swir22",
    "scl",
}
SHIFTED = S1Spec("2026-06-14", epsg=32632, pixel_m=20.0, shift_m=(3.0, -4.0), extent=(0.0, 0.0, 0.5, 1.0))
CONFIG = SyntheticCatalogConfig(
    size=384,
    scene_tile=128,
    s2=(
        S2Spec("2026-06-10", cloud_cover=0.3),  # baseline 05.10: pixels carry the -1000 offset
        S2Spec("2026-06-12", cloud_cover=0.6, processing_baseline="03.01"),  # before the offset existed
        S2Spec("2026-06-15", boa_offset_applied=True),  # Earth Search removed the offset
        S2Spec("2026-06-18", boa_offset_applied=True, declared_offset=-0.1),  # ... but still declares it
        S2Spec("2026-06-20", all_nodata=True),
    ),
    s1=(S1Spec("2026-06-08"), SHIFTED),
    seed=3,
)
SMALL = SyntheticCatalogConfig(size=96, scene_tile=64, s2=(S2Spec("2026-06-10"),), s1=(S1Spec("2026-06-08"),), seed=1)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCatalog:
    return write_synthetic_catalog(str(tmp_path_factory.mktemp("stac") / "catalog"), CONFIG)


@pytest.fixture(scope="module")
def items(written: SyntheticCatalog) -> dict[str, pystac.Item]:
    catalog = pystac.Catalog.from_file(written.catalog_href)
    return {item.id: item for item in catalog.get_items(recursive=True)}


def s2_item(items: dict[str, pystac.Item], index: int) -> pystac.Item:
    return items[s2_item_id(CONFIG, CONFIG.s2[index])]


def s1_item(items: dict[str, pystac.Item], index: int) -> pystac.Item:
    return items[s1_item_id(index, CONFIG.s1[index])]


def epsg_of(item: pystac.Item) -> int:
    """The item's EPSG code: pystac migrates ``proj:epsg`` (projection v1.1, as written) to ``proj:code`` on read."""
    code = item.properties.get("proj:code") or f"EPSG:{item.properties['proj:epsg']}"
    return int(code.removeprefix("EPSG:"))


def raw_properties(item: pystac.Item) -> dict:
    href = item.get_self_href()
    assert href is not None
    return json.loads(Path(href).read_text())["properties"]


def read(item: pystac.Item, key: str, window: Window | None = None) -> np.ndarray:
    with rasterio.open(item.assets[key].get_absolute_href()) as dataset:
        return dataset.read(1, window=window)


# --- the catalog ----------------------------------------------------------------------------------


def test_catalog_lists_every_item_with_its_collection(written: SyntheticCatalog, items: dict[str, pystac.Item]) -> None:
    assert set(items) == set(written.s2_ids) | set(written.s1_ids)
    assert len(written.s2_ids) == 5 and len(written.s1_ids) == 2
    assert written.s2_ids[0] == "S2B_31UFS_20260610_0_L2A"
    assert written.s1_ids[0].startswith("S1A_IW_GRDH_1SDV_20260608T055411_20260608T055436_")
    assert {items[i].collection_id for i in written.s2_ids} == {"sentinel-2-l2a"}
    assert {items[i].collection_id for i in written.s1_ids} == {"sentinel-1-grd"}
    root = Path(written.root)
    assert (root / "sentinel-2-l2a" / "collection.json").is_file()
    assert (root / "sentinel-2-l2a" / written.s2_ids[0] / f"{written.s2_ids[0]}.json").is_file()
    assert written.landcover_uri == f"{written.root}/reference/worldcover.tif"
    west, south, east, north = written.bbox_wgs84
    assert 4.0 < west < east < 4.5 and 45.0 < south < north < 45.3  # UTM 31 near 45 N


def test_s2_items_follow_earth_search(items: dict[str, pystac.Item]) -> None:
    item = s2_item(items, 0)
    assert set(item.assets) == S2_KEYS
    props = item.properties
    assert props["platform"] == "sentinel-2b" and props["constellation"] == "sentinel-2"
    assert props["instruments"] == ["msi"] and epsg_of(item) == 32631 and raw_properties(item)["proj:epsg"] == 32631
    assert (props["mgrs:utm_zone"], props["mgrs:latitude_band"], props["mgrs:grid_square"]) == (31, "U", "FS")
    assert props["s2:processing_baseline"] == "05.10" and props["earthsearch:boa_offset_applied"] is False
    assert item.datetime is not None and item.datetime.isoformat() == "2026-06-10T10:30:00+00:00"
    assert "https://stac-extensions.github.io/eo/v1.1.0/schema.json" in item.stac_extensions
    assert "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json" in item.stac_extensions
    red = item.assets["red"]
    assert red.media_type == "image/tiff; application=geotiff; profile=cloud-optimized"
    assert red.roles == ["data", "reflectance"] and red.extra_fields["gsd"] == 10
    assert red.extra_fields["eo:bands"][0] == {
        "name": "red",
        "common_name": "red",
        "description": "Red (band 4)",
        "center_wavelength": 0.665,
        "full_width_half_max": 0.038,
    }
    for band, meta in EARTH_SEARCH_BANDS.items():
        assert item.assets[meta.key].href == f"./{band}.tif"
        assert item.assets[meta.key].extra_fields["eo:bands"][0]["name"] == meta.key
    scl = item.assets["scl"]
    assert scl.roles == ["data"] and "eo:bands" not in scl.extra_fields
    assert scl.extra_fields["raster:bands"] == [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}]
    assert 0 < props["eo:cloud_cover"] < 100
    assert s2_item(items, 4).properties["s2:nodata_pixel_percentage"] == 100.0


@pytest.mark.parametrize(("index", "offset"), [(0, -0.1), (1, 0.0), (2, 0.0), (3, -0.1), (4, -0.1)])
def test_declared_offset_follows_baseline_and_boa_flag(
    items: dict[str, pystac.Item], index: int, offset: float
) -> None:
    item = s2_item(items, index)
    for key in S2_KEYS - {"scl"}:
        band = item.assets[key].extra_fields["raster:bands"][0]
        assert band["offset"] == offset and band["scale"] == 0.0001 and band["nodata"] == 0
        assert band["data_type"] == "uint16" and band["spatial_resolution"] == item.assets[key].extra_fields["gsd"]


def test_s1_items_carry_sar_metadata(items: dict[str, pystac.Item]) -> None:
    item = s1_item(items, 0)
    props = item.properties
    assert props["sar:instrument_mode"] == "IW" and props["sar:frequency_band"] == "C"
    assert props["sar:polarizations"] == ["VV", "VH"] and props["sar:product_type"] == "GRD"
    assert props["sar:center_frequency"] == 5.405 and props["sar:looks_equivalent_number"] == 4.4
    assert props["sat:orbit_state"] == "descending" and isinstance(props["sat:relative_orbit"], int)
    assert raw_properties(item)["proj:epsg"] == 32631 and epsg_of(s1_item(items, 1)) == 32632
    assert item.datetime is not None and item.datetime.isoformat() == "2026-06-08T05:54:11+00:00"
    assert "https://stac-extensions.github.io/sar/v1.0.0/schema.json" in item.stac_extensions
    assert set(item.assets) == {"vv", "vh"}
    vv = item.assets["vv"]
    assert vv.extra_fields["sar:polarizations"] == ["VV"] and vv.roles == ["data"]
    assert vv.extra_fields["raster:bands"] == [{"nodata": -32768, "data_type": "float32", "unit": "linear"}]


# --- the assets -----------------------------------------------------------------------------------


def test_asset_files_match_proj_shape_and_transform(items: dict[str, pystac.Item]) -> None:
    sides = {10: 384, 20: 192, 60: 64}
    for item in items.values():
        for key, asset in item.assets.items():
            with rasterio.open(asset.get_absolute_href()) as dataset:
                assert list(dataset.shape) == asset.extra_fields["proj:shape"], (item.id, key)
                assert list(dataset.transform)[:6] == pytest.approx(asset.extra_fields["proj:transform"])
                assert dataset.crs.to_epsg() == epsg_of(item)
                if item.collection_id == "sentinel-2-l2a":
                    resolution = asset.extra_fields["raster:bands"][0]["spatial_resolution"]
                    assert dataset.shape == (sides[resolution], sides[resolution])
                    assert dataset.transform.c == 600_000.0 and dataset.transform.f == 5_000_040.0


@pytest.mark.parametrize(("index", "offset_dn"), [(0, 1000), (1, 0), (2, 0)])
def test_digital_numbers_carry_the_offset_the_metadata_says(
    items: dict[str, pystac.Item], index: int, offset_dn: int
) -> None:
    reflectance, _ = optical_tile(CONFIG, index, 1, 2)  # tile rows 128:256, cols 256:384
    dn = read(s2_item(items, index), "red", Window(256, 128, 128, 128)).astype(np.float64)
    expected = reflectance[schema.S2_BANDS.index("B04")].astype(np.float64) * 10_000
    assert np.abs(dn - offset_dn - expected).max() <= 0.51
    # A 20 m band is the block mean of the 10 m reflectance: 20 m pixel (70, 140) covers rows 140:142, cols 280:282.
    nir08 = read(s2_item(items, index), "nir08", Window(140, 70, 1, 1))[0, 0]
    block = reflectance[schema.S2_BANDS.index("B8A"), 12:14, 24:26].mean() * 10_000 + offset_dn
    assert abs(float(nir08) - block) <= 0.51


def test_coarse_bands_of_odd_sizes_pad_edges_by_replication(tmp_path: Path) -> None:
    config = SyntheticCatalogConfig(size=100, scene_tile=32, s2=(S2Spec("2026-06-10"),), s1=(), seed=5)
    written = write_synthetic_catalog(str(tmp_path / "odd"), config)
    folder = tmp_path / "odd" / "sentinel-2-l2a" / written.s2_ids[0]
    shapes = {band: raster_info(str(folder / f"{band}.tif")).shape for band in ("B02", "B05", "B09", "SCL")}
    assert shapes == {"B02": (100, 100), "B05": (50, 50), "B09": (17, 17), "SCL": (50, 50)}
    reflectance, _ = optical_tile(config, 0, 3, 3)  # the corner tile: rows and cols 96:100 of the grid
    corner = reflectance[schema.S2_BANDS.index("B09"), :4, :4]
    padded = np.pad(corner, ((0, 2), (0, 2)), mode="edge")  # 60 m pixel 16 covers 96:102, the grid ends at 100
    with rasterio.open(folder / "B09.tif") as dataset:
        assert abs(float(dataset.read(1)[16, 16]) - (padded.mean() * 10_000 + 1000)) <= 0.51
    # a 60 m row that straddles two rows of scene tiles (rows 30:36 over tiles 0 and 1)
    top, _ = optical_tile(config, 0, 0, 0)
    bottom, _ = optical_tile(config, 0, 1, 0)
    band = schema.S2_BANDS.index("B01")
    block = np.concatenate([top[band, 30:32, 0:6], bottom[band, 0:4, 0:6]]).mean()
    with rasterio.open(folder / "B01.tif") as dataset:
        assert abs(float(dataset.read(1)[5, 0]) - (block * 10_000 + 1000)) <= 0.51
    catalog = pystac.Catalog.from_file(written.catalog_href)
    assert [item.id for item in catalog.get_items(recursive=True)] == list(written.s2_ids)


def test_clouds_differ_per_acquisition_over_the_same_ground(items: dict[str, pystac.Item]) -> None:
    scl = [read(s2_item(items, i), "scl") for i in range(3)]
    assert not np.array_equal(scl[0], scl[1])
    assert set(np.unique(np.concatenate([s.ravel() for s in scl]))) <= {3, 4, 5, 6, 9, 10}
    covers = [s2_item(items, i).properties["eo:cloud_cover"] for i in range(2)]
    for cover, codes in zip(covers, scl, strict=False):
        assert abs(np.isin(codes, [9, 10]).mean() * 100 - cover) < 15  # 20 m priority grows clouds a little
    clear = np.isin(scl[0], [4, 5, 6])
    truth = read_truth_labels(items)[::2, ::2]
    water_agreement = ((scl[0] == 6) == (truth == 0))[clear].mean()
    assert water_agreement > 0.95


def read_truth_labels(items: dict[str, pystac.Item]) -> np.ndarray:
    href = s2_item(items, 0).get_self_href()
    assert href is not None
    with rasterio.open(Path(href).parents[2] / "truth" / "labels.tif") as dataset:
        assert dataset.nodata == 255 and dataset.crs.to_epsg() == 32631
        return dataset.read(1)


def test_all_nodata_acquisition_is_zero_everywhere(items: dict[str, pystac.Item]) -> None:
    item = s2_item(items, 4)
    for key in ("blue", "nir08", "coastal", "scl"):
        assert not read(item, key).any()
    assert item.properties["eo:cloud_cover"] == 0.0


def test_truth_and_reference_land_cover(written: SyntheticCatalog, items: dict[str, pystac.Item]) -> None:
    labels = read_truth_labels(items)
    assert labels.shape == (384, 384)
    np.testing.assert_array_equal(labels[128:256, 0:128], ground_tile(CONFIG, 1, 0).label)
    assert written.landcover_uri is not None
    with rasterio.open(written.landcover_uri) as dataset:
        assert dataset.crs.to_epsg() == 4326 and dataset.nodata == 0
        assert dataset.res[0] == pytest.approx(1 / 12000)
        codes = dataset.read(1)
    assert set(np.unique(codes)) <= {0, 10, 30, 40, 50, 60, 80}
    shares = {code: np.mean(codes[codes > 0] == code) for code in (80, 10, 30, 60, 50, 40)}
    for class_id, code in enumerate((80, 10, 30, 60, 50, 40)):  # class order of schema.CLASSES
        assert shares[code] == pytest.approx(np.mean(labels == class_id), abs=0.02)


def test_sar_is_linear_power_on_the_optical_grid(items: dict[str, pystac.Item]) -> None:
    vv = read(s1_item(items, 0), "vv")
    assert vv.dtype == np.float32 and (vv != -32768).all()
    assert np.mean((vv > 0) & (vv < 1)) > 0.95
    truth = schema.db_to_linear(ground_tile(CONFIG, 2, 1).sar_db[0])
    np.testing.assert_allclose(vv[260:300, 140:180], truth[4:44, 12:52], rtol=1e-5)  # same grid: no resampling


def test_shifted_reprojected_s1_has_its_own_grid(items: dict[str, pystac.Item]) -> None:
    item = s1_item(items, 1)
    with rasterio.open(item.assets["vh"].get_absolute_href()) as dataset:
        assert dataset.crs.to_epsg() == 32632 and dataset.res == (20.0, 20.0)
        assert dataset.transform.c % 20 == pytest.approx(3.0) and dataset.transform.f % 20 == pytest.approx(16.0)
        vh = dataset.read(1)
    valid = vh != -32768
    assert 0.8 < valid.mean() < 1.0  # half the tile, as a rotated box in the other UTM zone
    assert np.mean((vh[valid] > 0) & (vh[valid] < 1)) > 0.99
    full = s1_item(items, 0).assets["vh"].extra_fields["proj:shape"]
    assert item.assets["vh"].extra_fields["proj:shape"][1] < full[1] / 3  # half the width at twice the pixel


# --- options, determinism, S3 ---------------------------------------------------------------------


def test_asset_base_url_makes_hrefs_absolute(tmp_path: Path) -> None:
    config = replace(SMALL, asset_base_url="http://127.0.0.1:9/data/")
    written = write_synthetic_catalog(str(tmp_path / "cat"), config, progress=True)
    catalog = pystac.Catalog.from_file(written.catalog_href)
    for item in catalog.get_items(recursive=True):
        for asset in item.assets.values():
            assert asset.href.startswith("http://127.0.0.1:9/data/")
            relative = asset.href.removeprefix("http://127.0.0.1:9/data/")
            assert (tmp_path / "cat" / relative).is_file()
            assert relative.startswith(f"{item.collection_id}/{item.id}/")


def test_same_config_writes_the_same_bytes(tmp_path: Path) -> None:
    first = write_synthetic_catalog(str(tmp_path / "a"), SMALL)
    write_synthetic_catalog(str(tmp_path / "b"), SMALL)
    s2, s1 = f"sentinel-2-l2a/{first.s2_ids[0]}", f"sentinel-1-grd/{first.s1_ids[0]}"
    for name in (
        "catalog.json",
        f"{s2}/{first.s2_ids[0]}.json",
        f"{s2}/B04.tif",
        f"{s2}/B8A.tif",
        f"{s2}/SCL.tif",
        f"{s1}/vv.tif",
        "truth/labels.tif",
        "reference/worldcover.tif",
    ):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    other = write_synthetic_catalog(str(tmp_path / "c"), replace(SMALL, seed=2))
    assert (tmp_path / "c" / f"{s2}/B04.tif").read_bytes() != (tmp_path / "a" / f"{s2}/B04.tif").read_bytes()
    assert other.s2_ids == first.s2_ids


def test_writes_to_s3(s3_bucket: str) -> None:
    root = f"s3://{s3_bucket}/stac"
    written = write_synthetic_catalog(root, SMALL)
    assert written.catalog_href == f"{root}/catalog.json"
    storage = open_storage(root)
    keys = storage.list()
    s2 = f"sentinel-2-l2a/{written.s2_ids[0]}"
    assert {
        "catalog.json",
        "sentinel-1-grd/collection.json",
        f"{s2}/B01.tif",
        f"{s2}/SCL.tif",
        "truth/labels.tif",
        f"sentinel-1-grd/{written.s1_ids[0]}/vh.tif",
        "reference/worldcover.tif",
    } <= set(keys)
    assert len(keys) == 1 + 2 + (1 + 13) + (1 + 2) + 2
    item = json.loads(storage.read_bytes(f"{s2}/{written.s2_ids[0]}.json"))
    assert item["collection"] == "sentinel-2-l2a" and item["assets"]["red"]["href"] == "./B04.tif"
    info = raster_info(f"{root}/{s2}/B04.tif")
    assert info.shape == (96, 96) and info.dtype == "uint16"


def test_config_rejects_inconsistent_grids() -> None:
    with pytest.raises(ValueError, match="multiples of 60"):
        SyntheticCatalogConfig(origin=(600_010.0, 5_000_040.0))
    with pytest.raises(ValueError, match="unique"):
        SyntheticCatalogConfig(s2=(S2Spec("2026-06-10"), S2Spec("2026-06-10")))
    with pytest.raises(ValueError, match="extent"):
        S1Spec("2026-06-10", extent=(0.5, 0.0, 0.5, 1.0))
    with pytest.raises(ValueError, match="cloud_cover"):
        S2Spec("2026-06-10", cloud_cover=30)


# --- the HTTP file server -------------------------------------------------------------------------


@pytest.fixture
def served(written: SyntheticCatalog) -> Iterator[tuple[FileServer, str, bytes]]:
    path = f"/sentinel-2-l2a/{written.s2_ids[0]}/B02.tif"
    with FileServer(Path(written.root)) as server:
        yield server, path, (Path(written.root) / path.lstrip("/")).read_bytes()


def test_range_requests(served: tuple[FileServer, str, bytes]) -> None:
    server, path, data = served
    size = len(data)
    with requests.Session() as session:
        response = session.get(server.url + path, headers={"Range": "bytes=100-199"}, timeout=10)
        assert response.status_code == 206 and response.content == data[100:200]
        assert response.headers["Content-Range"] == f"bytes 100-199/{size}"
        assert response.headers["Accept-Ranges"] == "bytes" and response.headers["Content-Length"] == "100"
        assert session.get(server.url + path, headers={"Range": "bytes=-10"}, timeout=10).content == data[-10:]
        tail = session.get(server.url + path, headers={"Range": f"bytes={size - 5}-"}, timeout=10)
        assert tail.status_code == 206 and tail.content == data[-5:]
        clipped = session.get(server.url + path, headers={"Range": f"bytes={size - 3}-{size + 100}"}, timeout=10)
        assert clipped.content == data[-3:]
        unsatisfiable = session.get(server.url + path, headers={"Range": f"bytes={size}-"}, timeout=10)
        assert unsatisfiable.status_code == 416 and unsatisfiable.headers["Content-Range"] == f"bytes */{size}"
        whole = session.get(server.url + path, timeout=10)
        assert whole.status_code == 200 and whole.content == data
        head = session.head(server.url + path, timeout=10)
        assert head.status_code == 200 and head.headers["Content-Length"] == str(size) and not head.content
        multi = session.get(server.url + path, headers={"Range": "bytes=0-3,10-13"}, timeout=10)
        assert multi.status_code == 206 and multi.headers["Content-Type"].startswith("multipart/byteranges")
        assert data[0:4] in multi.content and data[10:14] in multi.content
        assert int(multi.headers["Content-Length"]) == len(multi.content)


def test_missing_files_folders_and_escapes_are_404(served: tuple[FileServer, str, bytes]) -> None:
    server, _, _ = served
    for missing in ("/nope.tif", "/sentinel-2-l2a/", "/sentinel-2-l2a", "/../../etc/passwd", "/%2e%2e/etc/passwd"):
        assert requests.get(server.url + missing, timeout=10).status_code == 404, missing


def test_injected_failures_then_success(served: tuple[FileServer, str, bytes]) -> None:
    server, path, data = served
    server.fail(path, 404, times=2)
    statuses = [
        requests.get(server.url + path, headers={"Range": "bytes=0-9"}, timeout=10).status_code for _ in range(3)
    ]
    assert statuses == [404, 404, 206]
    assert server.requests_for(path) == 3
    server.fail(path, 503)
    assert requests.head(server.url + path, timeout=10).status_code == 503
    server.fail(path, 500, times=10)
    server.fail(path, times=0)  # replaces what is pending: clears it
    assert requests.head(server.url + path, timeout=10).status_code == 200
    server.delay(path, 0.3)
    start = time.monotonic()
    assert requests.get(server.url + path, headers={"Range": "bytes=0-0"}, timeout=10).content == data[:1]
    assert time.monotonic() - start >= 0.3
    assert server.requests_for(path) == 6


def test_rasterio_reads_a_window_over_http(served: tuple[FileServer, str, bytes], written: SyntheticCatalog) -> None:
    server, path, _ = served
    window = Window(50, 60, 32, 16)
    started = time.monotonic()
    # GDAL's defaults: it lists the folder and looks for sidecar files, some of it while rasterio holds the GIL,
    # which an in-process server thread could not answer (the server runs in a child process for that).
    with rasterio.open(server.url + path) as dataset:
        remote = dataset.read(1, window=window)
        assert dataset.shape == (384, 384) and dataset.crs.to_epsg() == 32631
    assert time.monotonic() - started < 5
    with rasterio.open(Path(written.root) / path.lstrip("/")) as dataset:
        np.testing.assert_array_equal(remote, dataset.read(1, window=window))
    assert server.requests_for(path) >= 1


def test_stop_frees_the_port(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    server = FileServer(tmp_path).start()
    port = server.port
    with requests.Session() as session:  # a kept-alive connection must not hold stop() up
        assert session.get(f"{server.url}/a.txt", timeout=10).text == "hello"
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 5
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine; a listener is not
        probe.bind(("127.0.0.1", port))
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/a.txt", timeout=2)
