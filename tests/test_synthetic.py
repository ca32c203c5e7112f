import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cloudlulc import schema
from cloudlulc.data.layout import DatasetLayout
from cloudlulc.data.synthetic import SynthConfig, generate_dataset
from cloudlulc.data.synthetic_scene import BARREN, CROP, GRASS, make_scene
from cloudlulc.errors import DataError
from cloudlulc.io.rasters import raster_info, read_raster


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path: Path):
    config = SynthConfig(n=4, size=48, seed=3)
    generate_dataset(str(tmp_path / "a"), config, progress=False)
    generate_dataset(str(tmp_path / "b"), config, workers=2, progress=False)
    generate_dataset(str(tmp_path / "c"), SynthConfig(n=4, size=48, seed=4), progress=False)
    a, b, c = (_digest(tmp_path / x) for x in "abc")
    assert a == b
    assert len(a) == 4 * 6 + 3 + 2  # six rasters per sample, three split files, metadata and parameters
    assert a["Label/synth_000000.tif"] != c["Label/synth_000000.tif"]


def test_layout_files_georeferencing_and_values(synthetic_master: Path):
    layout = DatasetLayout(str(synthetic_master))
    record = layout.read_records()[0]
    infos = {role: raster_info(layout.uri(path)) for role, path in record.files().items()}
    assert infos["opt_cloudy"].count == 12 and infos["opt_cloudy"].dtype == "uint16"
    assert infos["opt_cloudy"].descriptions == schema.S2_BANDS
    assert infos["sar_vv"].dtype == "float32" and infos["label"].dtype == "uint8"
    for info in infos.values():
        assert info.crs.to_epsg() // 100 in {326, 327}, "UTM north or south"
        assert (info.transform.a, info.transform.e) == (10.0, -10.0)
        assert info.transform == infos["opt_cloudy"].transform
    vv = read_raster(layout.uri(record.sar_vv))
    assert np.nanmedian(vv) < 0, "SAR is stored as sigma0 in dB"


def test_metadata_table_spreads_cloud_cover_and_is_complete(tmp_path: Path):
    generate_dataset(str(tmp_path), SynthConfig(n=40, size=48, seed=11), progress=False)
    metadata = pd.read_csv(tmp_path / "metadata.csv")
    assert len(metadata) == 40 and metadata["name"].is_unique
    bins = metadata["cloud_cover"].map(schema.cloud_bin_label).value_counts()
    assert len(bins) == 5, f"every cloud-cover bin is populated: {bins.to_dict()}"
    assert metadata["time_gap_days"].abs().max() <= 6
    classes = metadata[[f"class_{c.id}" for c in schema.CLASSES]].mean()
    assert (classes > 0.01).all() and classes.max() > 3 * classes.min(), "all classes, imbalanced"


def test_sar_cannot_separate_grass_crop_barren_but_optics_can():
    """A per-pixel nearest-mean classifier: SAR alone near chance among the three, clear optics not."""
    pixels: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {GRASS: [], CROP: [], BARREN: []}
    for index in range(10):
        scene = make_scene(np.random.default_rng([5, index]), 128)
        for cls in pixels:
            mask = scene.label == cls
            pixels[cls].append((scene.sar_db[:, mask], scene.clear[:, mask]))

    def accuracy(which: int) -> float:
        data = {c: np.concatenate([p[which] for p in parts], axis=1) for c, parts in pixels.items()}
        train = {c: v[:, ::2] for c, v in data.items()}
        test = {c: v[:, 1::2] for c, v in data.items()}
        means = {c: v.mean(axis=1) for c, v in train.items()}
        scale = np.concatenate(list(train.values()), axis=1).std(axis=1)
        correct = total = 0
        for cls, values in test.items():
            distances = np.stack([np.linalg.norm((values - means[c][:, None]) / scale[:, None], axis=0) for c in means])
            correct += int((np.array(list(means))[distances.argmin(0)] == cls).sum())
            total += values.shape[1]
        return correct / total

    sar_accuracy, optical_accuracy = accuracy(0), accuracy(1)
    assert sar_accuracy < 0.5, sar_accuracy
    assert optical_accuracy > 0.8, optical_accuracy


def test_opaque_cloud_erases_the_ground_signal():
    scene = next(s for i in range(50) if (s := make_scene(np.random.default_rng([9, i]), 128)).target_cloud_cover > 0.5)
    opaque = scene.cloud_mask == schema.CLOUD_OPAQUE
    clear_pixels = scene.clear[:, opaque]
    cloudy_pixels = scene.cloudy[:, opaque]
    nir = schema.S2_BANDS.index("B08")
    correlation = np.corrcoef(clear_pixels[nir], cloudy_pixels[nir])[0, 1]
    assert abs(correlation) < 0.3, "under opaque cloud the optical signal of the land is gone"
    assert cloudy_pixels[3].mean() > 0.4, "opaque cloud is bright"
    free = scene.cloud_mask == schema.CLOUD_CLEAR
    assert np.corrcoef(scene.clear[nir, free], scene.cloudy[nir, free])[0, 1] > 0.9


def test_shadows_are_darker_and_displaced_from_clouds():
    for i in range(60):
        scene = make_scene(np.random.default_rng([13, i]), 128)
        shadow = scene.cloud_mask == schema.CLOUD_SHADOW
        if shadow.sum() > 100:
            break
    else:
        pytest.fail("no scene with shadows")
    ratio = scene.cloudy[:, shadow].mean() / scene.clear[:, shadow].mean()
    assert ratio < 0.7


def test_small_temporal_change_between_sar_and_optical_dates():
    changes = [
        (s.label != s.sar_land_cover).mean() for s in (make_scene(np.random.default_rng([1, i]), 96) for i in range(12))
    ]
    assert max(changes) > 0 and np.mean(changes) < 0.1


def test_interrupted_run_resumes_to_identical_bytes(tmp_path: Path):
    config = SynthConfig(n=5, size=48, seed=2)
    generate_dataset(str(tmp_path / "full"), config, progress=False)
    partial = tmp_path / "partial"
    generate_dataset(str(partial), config, progress=False)
    # Simulate a kill before the index was written and one sample's files were complete.
    for path in [*partial.glob("split/*.csv"), partial / "metadata.csv", *partial.glob("*/synth_000003.tif")]:
        path.unlink()
    (partial / "Label" / ".synth_000004.tmp-deadbeef.tif").write_bytes(b"half-written")
    generate_dataset(str(partial), config, progress=False)
    full, resumed = _digest(tmp_path / "full"), _digest(partial)
    resumed.pop("Label/.synth_000004.tmp-deadbeef.tif")
    assert resumed == full


def test_rerun_with_other_parameters_is_refused(tmp_path: Path):
    generate_dataset(str(tmp_path), SynthConfig(n=2, size=48, seed=1), progress=False)
    before = _digest(tmp_path)
    with pytest.raises(DataError, match="other parameters"):
        generate_dataset(str(tmp_path), SynthConfig(n=2, size=48, seed=2), progress=False)
    assert _digest(tmp_path) == before


def test_generate_to_s3(s3_bucket: str):
    root = f"s3://{s3_bucket}/sets/a"
    records = generate_dataset(root, SynthConfig(n=3, size=48, seed=0), progress=False)
    layout = DatasetLayout(root)
    assert sorted(r.name for r in layout.read_records()) == sorted(r.name for r in records)
    assert raster_info(layout.uri(records[0].opt_cloudy)).count == 12


def test_thin_cloud_is_semi_transparent():
    """Haze, cirrus and cloud edges brighten the ground but keep its pattern."""
    correlations = []
    for index in range(40):
        scene = make_scene(np.random.default_rng([17, index]), 128)
        thin = scene.cloud_mask == schema.CLOUD_THIN
        if thin.sum() < 500:
            continue
        nir = schema.S2_BANDS.index("B08")
        blue = schema.S2_BANDS.index("B02")
        assert scene.cloudy[blue, thin].mean() > 1.2 * scene.clear[blue, thin].mean(), "thin cloud brightens"
        correlations.append(np.corrcoef(scene.clear[nir, thin], scene.cloudy[nir, thin])[0, 1])
    assert len(correlations) >= 5
    assert np.median(correlations) > 0.3, "the ground still shows through thin cloud"
