"""Agreement of a product with a reference land-cover product (ESA WorldCover by default), per class.

The product-level check of the CloudLULC-Net paper: the reference raster (any CRS; its codes mapped
to CloudLULC classes by a label table, ``cloudlulc.ingest.labels``) is read through a warped view
onto the product grid with nearest neighbour, window by window, and every pixel both products map
counts in a confusion matrix (rows: product, columns: reference). Overall agreement and each class's
user's agreement (of the product's pixels of a class, the share the reference confirms) and
producer's agreement (of the reference's pixels of a class, the share the product finds) follow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from cloudlulc import schema
from cloudlulc.ingest.grid import Grid
from cloudlulc.ingest.labels import load_table, lookup_array, remap
from cloudlulc.io.rasters import open_raster, read_window
from cloudlulc.io.vrt import warped_view
from cloudlulc.products.areas import CELL
from cloudlulc.products.mosaic import EXACT

CLASS_COUNT = len(schema.CLASSES)


def agreement(
    classes_uri: str, reference_uri: str, grid: Grid, *, table: str = "worldcover", reference_name: str = ""
) -> dict[str, Any]:
    """Confusion matrix and agreement figures of the product map against ``reference_uri``.

    Returns:
        ``reference``, ``classes`` (names), ``confusion`` (pixel counts, product rows x reference
        columns), ``pixels``, ``overall_agreement`` and ``per_class`` (name -> producer, user; None
        where a class is absent from the side that divides).
    """
    lookup = lookup_array(load_table(table))
    with open_raster(classes_uri) as product, open_raster(reference_uri) as source, _onto(source, grid) as reference:
        confusion = _confusion(product, reference, grid, lookup)
    return summarize(confusion, reference_name or reference_uri)


def _onto(source: DatasetReader, grid: Grid) -> WarpedVRT:
    """The reference seen on the product grid (nearest neighbour: codes must not be averaged)."""
    nodata = source.nodata if source.nodata is not None else 0
    return warped_view(source, grid, Resampling.nearest, src_nodata=nodata, nodata=nodata, tolerance=EXACT)


def _confusion(product: DatasetReader, reference: WarpedVRT, grid: Grid, lookup: np.ndarray) -> np.ndarray:
    confusion = np.zeros((CLASS_COUNT, CLASS_COUNT), np.int64)
    for row in range(0, grid.height, CELL):
        for col in range(0, grid.width, CELL):
            window = Window(col, row, min(CELL, grid.width - col), min(CELL, grid.height - row))
            mapped = read_window(product, window, indexes=[1])[0]
            truth = remap(reference.read(1, window=window), lookup)
            both = (mapped < CLASS_COUNT) & (truth < CLASS_COUNT)
            pairs = mapped[both].astype(np.int64) * CLASS_COUNT + truth[both]
            confusion += np.bincount(pairs, minlength=CLASS_COUNT**2).reshape(CLASS_COUNT, CLASS_COUNT)
    return confusion


def summarize(confusion: np.ndarray, reference: str) -> dict[str, Any]:
    """Agreement figures of a confusion matrix (product rows x reference columns)."""
    names = [c.name for c in schema.CLASSES]
    total = int(confusion.sum())
    diagonal = np.diag(confusion)
    per_class = {}
    for index, name in enumerate(names):
        mapped, referenced = int(confusion[index].sum()), int(confusion[:, index].sum())
        per_class[name] = {
            "user": float(diagonal[index] / mapped) if mapped else None,
            "producer": float(diagonal[index] / referenced) if referenced else None,
        }
    return {
        "reference": reference,
        "classes": names,
        "confusion": confusion.tolist(),
        "pixels": total,
        "overall_agreement": float(diagonal.sum() / total) if total else None,
        "per_class": per_class,
    }
