"""Earth Search v1 conventions: collection ids, asset keys, SCL and WorldCover codes, the pixel grid.

One module owns them so that the reader (``stac``, ``assets``, ``coregister``, ``labels``, ``grid``) and
the synthetic catalog (``synthetic``) cannot drift apart: the synthetic catalog is only a fair test of
the reader while both speak the same dialect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cloudlulc import schema

CATALOG_URL: Final = "https://earth-search.aws.element84.com/v1"
"""Element 84's Earth Search: public Sentinel-2 L2A and Sentinel-1 GRD collections (COG assets on AWS)."""
S2_COLLECTION: Final = "sentinel-2-l2a"
S1_COLLECTION: Final = "sentinel-1-grd"
PIXEL_M: Final = 10.0
"""Pixel size of the optical grid (the 10 m bands, the labels); ingest grids use it too."""
COG_MEDIA_TYPE: Final = "image/tiff; application=geotiff; profile=cloud-optimized"

PROCESSING_BASELINE: Final = "s2:processing_baseline"
"""Item property holding the L2A processing baseline (``05.10``)."""
BOA_OFFSET_APPLIED: Final = "earthsearch:boa_offset_applied"
"""Item property: true when Earth Search already removed the -1000 DN offset from the pixels."""
BASELINE_WITH_OFFSET: Final = (4, 0)
"""Processing baseline from which L2A digital numbers carry BOA_ADD_OFFSET = -1000 (25 January 2022)."""


@dataclass(frozen=True)
class EarthSearchBand:
    """How Earth Search v1 describes one L2A band: asset key and ``eo:bands`` entry."""

    key: str
    common_name: str
    description: str
    center_wavelength: float
    full_width_half_max: float


EARTH_SEARCH_BANDS: Final[dict[str, EarthSearchBand]] = {
    "B01": EarthSearchBand("coastal", "coastal", "Coastal aerosol (band 1)", 0.443, 0.027),
    "B02": EarthSearchBand("blue", "blue", "Blue (band 2)", 0.49, 0.098),
    "B03": EarthSearchBand("green", "green", "Green (band 3)", 0.56, 0.045),
    "B04": EarthSearchBand("red", "red", "Red (band 4)", 0.665, 0.038),
    "B05": EarthSearchBand("rededge1", "rededge", "Red edge 1 (band 5)", 0.704, 0.019),
    "B06": EarthSearchBand("rededge2", "rededge", "Red edge 2 (band 6)", 0.74, 0.018),
    "B07": EarthSearchBand("rededge3", "rededge", "Red edge 3 (band 7)", 0.783, 0.028),
    "B08": EarthSearchBand("nir", "nir", "NIR 1 (band 8)", 0.842, 0.145),
    "B8A": EarthSearchBand("nir08", "nir08", "NIR 2 (band 8A)", 0.865, 0.033),
    "B09": EarthSearchBand("nir09", "nir09", "NIR 3 (band 9)", 0.945, 0.026),
    "B11": EarthSearchBand("swir16", "swir16", "SWIR 1 (band 11)", 1.61, 0.143),
    "B12": EarthSearchBand("swir22", "swir22", "SWIR 2 (band 12)", 2.19, 0.242),
}
"""Per band of :data:`schema.S2_BANDS`; as in real items, the ``eo:bands`` name is the asset key (``red``)."""

S2_ASSET_KEYS: Final[dict[str, tuple[str, ...]]] = {band: (meta.key, band) for band, meta in EARTH_SEARCH_BANDS.items()}
"""Asset keys of each band in the public catalogues (Earth Search, then Planetary Computer)."""
SCL_ASSET_KEY: Final = "scl"
SCL_ASSET_KEYS: Final = (SCL_ASSET_KEY, "SCL", "SCL_20m")
SAR_ASSET_KEYS: Final[dict[str, tuple[str, ...]]] = {p: (p.lower(), p) for p in schema.S1_POLARISATIONS}
"""Asset keys of each polarisation: Earth Search writes them lower case (``vv``), others upper case."""


def sar_asset_key(polarisation: str) -> str:
    """Earth Search's asset key of a polarisation (``VV`` -> ``vv``)."""
    return SAR_ASSET_KEYS[polarisation][0]


# Scene classification (SCL) codes of Sen2Cor.
SCL_NODATA: Final = 0
SCL_SHADOW: Final = 3
SCL_VEGETATION: Final = 4
SCL_NOT_VEGETATED: Final = 5
SCL_WATER: Final = 6
SCL_CLOUD_MEDIUM: Final = 8
SCL_CLOUD_HIGH: Final = 9
SCL_CIRRUS: Final = 10

# ESA WorldCover 2021 v200 codes (0 is nodata).
WC_NODATA: Final = 0
WC_TREE_COVER: Final = 10
WC_SHRUBLAND: Final = 20
WC_GRASSLAND: Final = 30
WC_CROPLAND: Final = 40
WC_BUILT_UP: Final = 50
WC_BARE: Final = 60
WC_SNOW_ICE: Final = 70
WC_WATER: Final = 80
WC_WETLAND: Final = 90
WC_MANGROVES: Final = 95
WC_MOSS_LICHEN: Final = 100
WORLDCOVER_COLOURS: Final[dict[int, tuple[int, int, int, int]]] = {
    WC_TREE_COVER: (0, 100, 0, 255),
    WC_GRASSLAND: (255, 255, 76, 255),
    WC_CROPLAND: (240, 150, 255, 255),
    WC_BUILT_UP: (250, 0, 0, 255),
    WC_BARE: (180, 180, 180, 255),
    WC_WATER: (0, 100, 200, 255),
}
"""WorldCover's own palette for the codes the synthetic reference uses."""
WORLDCOVER_PIXEL_DEG: Final = 1 / 12000
"""The ESA WorldCover grid (about 9 m north-south)."""
