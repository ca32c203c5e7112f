"""Class names and colours as GIS tools read them: GDAL category names beside the map, and a QGIS style.

The class map's colour table travels inside the COG. Category names have no place in a TIFF, so GDAL
keeps them in a PAM sidecar (``<map>.tif.aux.xml``) that it, QGIS and every GDAL-based tool read
with the map; the QGIS layer style (``.qml``, a paletted renderer) gives the legend its names and
colours when the map is dragged into QGIS. Both are written with the XML library, atomically.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from cloudlulc import schema
from cloudlulc.io.storage import staged_output

QGIS_DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
QGIS_VERSION = "3.34.0"
"""The QGIS release whose style format the ``.qml`` follows (read by every 3.x release)."""


def _hex(colour: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def category_names() -> list[str]:
    """GDAL's category list: index = pixel value; values that are not classes get an empty name."""
    names = [""] * (max(c.id for c in schema.CLASSES) + 1)
    for lulc in schema.CLASSES:
        names[lulc.id] = lulc.name
    return names


def write_category_names(map_uri: str) -> str:
    """Write ``<map_uri>.aux.xml`` naming every class of band 1; returns its URI."""
    dataset = ET.Element("PAMDataset")
    band = ET.SubElement(dataset, "PAMRasterBand", band="1")
    categories = ET.SubElement(band, "CategoryNames")
    for name in category_names():
        ET.SubElement(categories, "Category").text = name
    uri = f"{map_uri}.aux.xml"
    with staged_output(uri) as temp_path:
        ET.ElementTree(dataset).write(temp_path, encoding="utf-8", xml_declaration=False)
    return uri


def write_qgis_style(uri: str) -> str:
    """Write a QGIS layer style (paletted renderer, one entry per class, nodata transparent) to ``uri``."""
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="Symbology")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1")
    palette = ET.SubElement(renderer, "colorPalette")
    for lulc in schema.CLASSES:
        ET.SubElement(
            palette, "paletteEntry", value=str(lulc.id), color=_hex(lulc.colour), label=lulc.name, alpha="255"
        )
    with staged_output(uri) as temp_path:
        temp_path.write_text(
            "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            + ET.tostring(root, encoding="unicode")
            + "\n"
        )
    return uri
