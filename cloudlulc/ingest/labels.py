"""Reference land-cover rasters remapped to the 6 CloudLULC classes through a mapping table.

A table maps source values to class ids (``schema.CLASSES``) or 255 (no label); values it does not
name become 255 as well, and the chip's metadata counts them. One table is built in (ESA WorldCover
2021, our choices below); any other product is mapped with a two-column CSV ``source,target``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from cloudlulc import schema
from cloudlulc.errors import DataError
from cloudlulc.ingest import earth_search as es

WORLDCOVER: dict[int, int] = {
    es.WC_TREE_COVER: 1,  # Forest
    es.WC_SHRUBLAND: 2,  # Grassland
    es.WC_GRASSLAND: 2,  # Grassland
    es.WC_CROPLAND: 5,  # Cropland
    es.WC_BUILT_UP: 4,  # Built-up land
    es.WC_BARE: 3,  # bare / sparse vegetation -> Barren land
    es.WC_SNOW_ICE: schema.IGNORE_INDEX,  # snow and ice: no CloudLULC class
    es.WC_WATER: 0,  # permanent water bodies -> Water
    es.WC_WETLAND: 2,  # herbaceous wetland -> Grassland
    es.WC_MANGROVES: 1,  # Forest
    es.WC_MOSS_LICHEN: 2,  # Grassland
}
"""ESA WorldCover 2021 v200 codes to CloudLULC class ids (our choice; 0 = WorldCover nodata -> 255)."""

BUILT_IN_TABLES: dict[str, dict[int, int]] = {"worldcover": WORLDCOVER}


def load_table(name_or_path: str) -> dict[int, int]:
    """A built-in table by name, or a CSV file of ``source,target`` rows (header optional)."""
    if name_or_path in BUILT_IN_TABLES:
        return dict(BUILT_IN_TABLES[name_or_path])
    path = Path(name_or_path)
    if not path.is_file():
        raise DataError(
            name_or_path, f"label table not found (built-in tables: {', '.join(BUILT_IN_TABLES)}; or a CSV file)"
        )
    table: dict[int, int] = {}
    for number, row in enumerate(csv.reader(io.StringIO(path.read_text())), start=1):
        if not row or row[0].strip().startswith("#") or not row[0].strip().lstrip("-").isdigit():
            continue
        if len(row) < 2:
            raise DataError(f"{path}:{number}", "expected two columns: source value, target class id")
        source, target = int(row[0]), int(row[1])
        if target not in schema.VALID_LABEL_VALUES:
            raise DataError(
                f"{path}:{number}", f"target {target} is not a class id {sorted(schema.VALID_LABEL_VALUES)}"
            )
        if not 0 <= source <= 255:
            raise DataError(f"{path}:{number}", f"source value {source} is outside 0-255 (uint8 rasters only)")
        table[source] = target
    if not table:
        raise DataError(str(path), "label table has no rows")
    return table


def lookup_array(table: dict[int, int]) -> np.ndarray:
    """A 256-entry lookup: ``lookup[source]`` is the class id, 255 where the table is silent."""
    lookup = np.full(256, schema.IGNORE_INDEX, np.uint8)
    for source, target in table.items():
        lookup[source] = target
    return lookup


def remap(values: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    """Source label values (any integer type, 0-255) to class ids."""
    return lookup[values.astype(np.uint8)]
