import numpy as np
import pytest

from cloudlulc import schema


def test_band_order_and_classes_are_the_contract():
    assert schema.S2_BANDS == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
    assert "B10" not in schema.S2_BANDS
    assert schema.S1_POLARISATIONS == ("VV", "VH")
    assert [(c.id, c.name) for c in schema.CLASSES] == [
        (0, "Water"),
        (1, "Forest"),
        (2, "Grassland"),
        (3, "Barren land"),
        (4, "Built-up land"),
        (5, "Cropland"),
    ]
    assert schema.IGNORE_INDEX == 255
    assert len({c.colour for c in schema.CLASSES}) == 6
    assert [schema.S2_BANDS[i] for i in schema.TRUE_COLOUR] == ["B04", "B03", "B02"]
    table = schema.colour_table()
    assert table[255][3] == 0 and all(table[c.id][:3] == c.colour for c in schema.CLASSES)


def test_l2a_dn_to_reflectance_with_and_without_offset():
    dn = np.array([0, 1000, 2000, 11000, 65535], np.uint16)
    old = schema.s2_dn_to_reflectance(dn)  # baseline < 04.00: no offset
    np.testing.assert_allclose(old, [0.0, 0.1, 0.2, 1.0, 1.0])
    new = schema.s2_dn_to_reflectance(dn, boa_add_offset=-1000)
    np.testing.assert_allclose(new, [0.0, 0.0, 0.1, 1.0, 1.0])
    assert new.dtype == np.float32


def test_reflectance_round_trip_never_writes_nodata():
    reflectance = np.array([0.0, 0.05, 0.5, 1.2], np.float32)
    for offset in (0, -1000):
        dn = schema.reflectance_to_s2_dn(reflectance, offset)
        assert dn.min() >= 1
        back = schema.s2_dn_to_reflectance(dn, offset)
        np.testing.assert_allclose(back[1:3], reflectance[1:3], atol=1e-4)


def test_linear_db_conversion_and_nodata():
    power = np.array([1.0, 0.1, 0.01, 0.0, -1.0], np.float32)
    db = schema.linear_to_db(power)
    np.testing.assert_allclose(db[:3], [0.0, -10.0, -20.0], atol=1e-5)
    assert np.isnan(db[3:]).all()
    np.testing.assert_allclose(schema.db_to_linear(db[:3]), power[:3], rtol=1e-5)


@pytest.mark.parametrize(("polarisation", "low"), [("VV", -25.0), ("VH", -32.5)])
def test_sar_scaling_clips_and_maps_nodata_to_zero(polarisation, low):
    db = np.array([low - 5, low, low / 2, 0.0, 3.0, np.nan, -np.inf], np.float32)
    scaled = schema.scale_sar_db(db, polarisation)
    np.testing.assert_allclose(scaled, [0.0, 0.0, 0.5, 1.0, 1.0, 0.0, 0.0], atol=1e-6)


def test_cloud_bins():
    assert [schema.cloud_bin_label(v) for v in (0.0, 0.05, 0.1, 0.29, 0.3, 0.89, 0.9, 1.0)] == [
        "0-10%",
        "0-10%",
        "10-30%",
        "10-30%",
        "30-60%",
        "60-90%",
        "90-100%",
        "90-100%",
    ]
