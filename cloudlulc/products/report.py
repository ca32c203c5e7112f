"""The report page of a regional product: one static HTML file a person opens to judge the map.

The page is self-contained (images as base64 PNG data URIs, inline CSS, no script, no external URL), so
it reads the same opened as a local file, served from a bucket or shown as a Kubeflow HTML artifact.
Everything it says comes from the product's :class:`~cloudlulc.products.model.RegionProduct`, the same
description the STAC item is made from; :func:`report_images` renders the pictures from decimated
reads of the product's COGs, so a report of a large region never holds the full raster in memory.
"""

from __future__ import annotations

import base64
import html
import io
import posixpath
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any
from urllib.parse import quote

import numpy as np
from rasterio.enums import Resampling

from cloudlulc import schema
from cloudlulc.io.rasters import open_raster
from cloudlulc.products.change import CHANGE_NODATA, CLASS_COUNT
from cloudlulc.products.model import ClassArea, RegionProduct, SceneUse
from cloudlulc.quicklook import label_colours

REPORT_SIDE = 1024
"""Longest side of each map picture, in pixels: sharp on a laptop screen, a few hundred kB per PNG."""
CONFIDENCE_COLORMAP = "viridis"
"""Perceptually uniform and colour-blind safe, so equal steps of probability look like equal steps."""
UNCHANGED_RGB = (170, 170, 170)
"""Grey of pixels whose class did not change, so the eye goes to the coloured (changed) ones."""
MISSING = "—"
"""Shown for a value the product does not have (no optical scene, no registered model)."""

_MODEL_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(RegionProduct)}
DEFAULT_CONFIDENCE_SCALE: float = _MODEL_DEFAULTS["confidence_scale"]
DEFAULT_CONFIDENCE_OFFSET: float = _MODEL_DEFAULTS["confidence_offset"]

ASSET_TITLES = {
    "classes": "Class map (COG)",
    "confidence": "Confidence (COG)",
    "source": "Source scenes and optics state (COG)",
    "areas": "Class areas",
    "style": "Map style",
    "quicklook": "Quicklook",
    "change": "Change map (COG)",
    "transitions": "Transition areas",
}


@dataclass(frozen=True)
class ReportImages:
    """The pictures of a report, as PNG bytes; ``change`` only when the product has a change map."""

    classes: bytes
    confidence: bytes
    change: bytes | None = None


def decode_change(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split change-map values (``before * CLASS_COUNT + after``, ``products.change``) into before, after, valid."""
    valid = (codes != CHANGE_NODATA) & (codes < CLASS_COUNT**2)
    index = np.where(valid, codes, 0).astype(np.int32)
    return index // CLASS_COUNT, index % CLASS_COUNT, valid


# --- Pictures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Overview:
    """Band 1 of a raster read decimated, with what its header says about the values."""

    values: np.ndarray
    nodata: float | None
    scale: float
    offset: float


def _read_overview(uri: str, max_side: int) -> _Overview:
    """Band 1 of ``uri`` with its longest side at most ``max_side`` (never enlarged), from one open.

    Nearest neighbour on a smaller ``out_shape`` lets GDAL read the COG's overviews instead of the full
    raster, as the scene quicklooks do (``mapping.quicklook.read_map_overview``); class codes are never mixed.
    """
    with open_raster(uri) as dataset:
        ratio = min(1.0, max_side / max(dataset.height, dataset.width))
        shape = (max(1, round(dataset.height * ratio)), max(1, round(dataset.width * ratio)))
        values = dataset.read(1, out_shape=shape, resampling=Resampling.nearest)
        return _Overview(values, dataset.nodata, dataset.scales[0], dataset.offsets[0])


def _png(rgba: np.ndarray) -> bytes:
    """Encode an [H,W,4] uint8 image as PNG (matplotlib's writer: no figure, no display needed)."""
    import matplotlib.image

    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, np.ascontiguousarray(rgba), format="png")
    return buffer.getvalue()


def _class_rgba(classes: np.ndarray, nodata: float | None) -> np.ndarray:
    """Class ids to RGBA in the class colours; nodata and unknown ids transparent."""
    rgba = np.zeros((*classes.shape, 4), np.uint8)
    rgba[..., :3] = np.rint(label_colours(classes.astype(np.uint8)) * 255).astype(np.uint8)
    valid = classes < schema.NUM_CLASSES
    if nodata is not None:
        valid &= classes != nodata
    rgba[..., 3] = np.where(valid, 255, 0)
    return rgba


def _probability(values: np.ndarray, nodata: float | None, scale: float, offset: float) -> np.ndarray:
    """Stored confidence values to probability in [0, 1], NaN where there is none."""
    if np.issubdtype(values.dtype, np.floating):
        probability = values.astype(np.float32)
        invalid = ~np.isfinite(probability)
    else:
        probability = values.astype(np.float32) * np.float32(scale) + np.float32(offset)
        invalid = values == 0
    if nodata is not None:
        invalid |= values == nodata
    return np.where(invalid, np.nan, np.clip(probability, 0.0, 1.0))


def _confidence_rgba(overview: _Overview) -> np.ndarray:
    """Confidence coloured with :data:`CONFIDENCE_COLORMAP`; nodata transparent.

    The band's own scale and offset are used when the file declares them, otherwise the product's
    convention (``1 + 254 p``, 0 = nodata).
    """
    import matplotlib

    scale, offset = overview.scale, overview.offset
    if (scale, offset) == (1.0, 0.0):  # nothing declared: the product's convention
        scale, offset = DEFAULT_CONFIDENCE_SCALE, DEFAULT_CONFIDENCE_OFFSET
    probability = _probability(overview.values, overview.nodata, scale, offset)
    rgba = matplotlib.colormaps[CONFIDENCE_COLORMAP](np.nan_to_num(probability), bytes=True)
    rgba[..., 3] = np.where(np.isnan(probability), 0, 255)
    return rgba


def _change_rgba(codes: np.ndarray, nodata: float | None) -> np.ndarray:
    """Change codes to RGBA: changed pixels in their new class's colour, unchanged grey, nodata transparent."""
    before, after, valid = decode_change(codes)
    if nodata is not None:
        valid &= codes != nodata
    rgba = _class_rgba(after.astype(np.uint8), None)
    rgba[(before == after) & valid, :3] = UNCHANGED_RGB
    rgba[..., 3] = np.where(valid, 255, 0)
    return rgba


def report_images(
    classes_uri: str, confidence_uri: str, change_uri: str | None = None, max_side: int = REPORT_SIDE
) -> ReportImages:
    """Render the report's pictures from decimated reads of the product's COGs (overviews are used).

    Args:
        classes_uri: class COG (class ids; 255 or the file's nodata is no data).
        confidence_uri: confidence COG (``1 + 254 p``, 0 = nodata, unless the band declares scale and offset).
        change_uri: change COG of ``products.change`` (``before * CLASS_COUNT + after``), when there is one.
        max_side: longest side of each picture; smaller rasters are not enlarged.
    """
    classes = _read_overview(classes_uri, max_side)
    change = None if change_uri is None else _read_overview(change_uri, max_side)
    return ReportImages(
        classes=_png(_class_rgba(classes.values, classes.nodata)),
        confidence=_png(_confidence_rgba(_read_overview(confidence_uri, max_side))),
        change=None if change is None else _png(_change_rgba(change.values, change.nodata)),
    )


# --- Text helpers -------------------------------------------------------------------------------


def _e(value: object) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return html.escape(str(value), quote=True)


def _km2(value: float) -> str:
    return f"{value:,.2f}"


def _percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}" if whole > 0 else MISSING


def _when(moment: datetime | None) -> str:
    """A scene time in UTC to the minute (the scene ids carry the exact time)."""
    if moment is None:
        return MISSING
    return moment.strftime("%Y-%m-%d %H:%M UTC" if moment.tzinfo else "%Y-%m-%d %H:%M")


def _hex(rgb: Sequence[float]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb))


CLASS_COLOURS = {c.name: _hex(c.colour) for c in schema.CLASSES}


def _swatch(name: str) -> str:
    colour = CLASS_COLOURS.get(name, "transparent")
    return f"<span class='swatch' style='background:{colour}'></span>{_e(name)}"


def _img(png: bytes, element_id: str, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<img id='{element_id}' class='map' alt='{_e(alt)}' src='data:image/png;base64,{data}'>"


def _class_order(names: Iterable[str]) -> list[str]:
    """The schema's class order, then any other names in their first-seen order."""
    seen = list(dict.fromkeys(names))
    return [n for n in schema.CLASS_NAMES if n in seen] + [n for n in seen if n not in schema.CLASS_NAMES]


# --- Sections -----------------------------------------------------------------------------------


def _header(product: RegionProduct) -> str:
    """Heading and the product's identity: where, when, which grid."""
    a, _, c, _, e, f = product.transform
    total = sum(area.km2 for area in product.areas)
    return (
        f"<h1>Land cover of {_e(product.region)} on {_e(product.target_date.isoformat())}</h1>"
        "<dl class='facts'>"
        f"<dt>Item</dt><dd><code>{_e(product.item_id)}</code></dd>"
        f"<dt>Grid</dt><dd>EPSG:{product.epsg}, {product.width} × {product.height} pixels of "
        f"{abs(a):g} × {abs(e):g} m, upper left corner ({c:.1f}, {f:.1f})</dd>"
        f"<dt>Mapped area</dt><dd>{_km2(total)} km²</dd>"
        "</dl>"
    )


def _legend(element_id: str, entries: Iterable[tuple[str, str]]) -> str:
    items = "".join(
        f"<li><span class='swatch' style='background:{colour}'></span>{_e(label)}</li>" for colour, label in entries
    )
    return f"<ul class='legend' id='{element_id}'>{items}</ul>"


def _class_map(images: ReportImages) -> str:
    legend = _legend("class-legend", [(_hex(c.colour), c.name) for c in schema.CLASSES])
    nodata = "<p class='note'>Transparent (checkered): no data.</p>"
    return (
        "<section id='class-map-section'><h2>Land cover</h2>"
        f"<figure>{_img(images.classes, 'class-map', 'land-cover class map')}"
        f"<figcaption>{legend}{nodata}</figcaption></figure></section>"
    )


def _colour_bar() -> str:
    """A CSS gradient sampled from the confidence colormap, labelled in probability."""
    import matplotlib

    colormap = matplotlib.colormaps[CONFIDENCE_COLORMAP]
    stops = ", ".join(f"{_hex(colormap(t / 10, bytes=True)[:3])} {10 * t}%" for t in range(11))
    ticks = "".join(f"<span>{t:.2f}</span>" for t in np.linspace(0, 1, 5))
    return (
        "<div class='colourbar' id='confidence-bar'>"
        f"<div class='bar' style='background: linear-gradient(to right, {stops})'></div>"
        f"<div class='ticks'>{ticks}</div>"
        "<div class='barlabel'>probability of the mapped class</div></div>"
    )


def _confidence(images: ReportImages) -> str:
    return (
        "<section id='confidence-section'><h2>Confidence</h2>"
        f"<figure>{_img(images.confidence, 'confidence-map', 'confidence map')}"
        f"<figcaption>{_colour_bar()}</figcaption></figure></section>"
    )


def _area_rows(areas: Sequence[ClassArea]) -> tuple[str, float]:
    total = sum(a.km2 for a in areas)
    rows = "".join(
        f"<tr><td>{_swatch(a.name)}</td><td class='num'>{_km2(a.km2)}</td>"
        f"<td class='num'>{_percent(a.km2, total)}</td></tr>"
        for a in areas
    )
    return rows, total


def _areas_table(element_id: str, areas: Sequence[ClassArea], caption: str = "") -> str:
    rows, total = _area_rows(areas)
    caption_html = f"<caption>{_e(caption)}</caption>" if caption else ""
    return (
        f"<table id='{_e(element_id)}' class='areas'>{caption_html}"
        "<thead><tr><th>class</th><th>km²</th><th>%</th></tr></thead>"
        f"<tbody>{rows}</tbody>"
        f"<tfoot><tr><th>total</th><td class='num'>{_km2(total)}</td>"
        f"<td class='num'>{'100.0' if total > 0 else MISSING}</td></tr></tfoot></table>"
    )


def _areas(product: RegionProduct) -> str:
    """Class areas overall and, when the AOI has several features, per feature."""
    per_feature = "".join(
        _areas_table(f"areas-feature-{index}", areas, f"AOI feature {index}")
        for index, areas in enumerate(product.feature_areas, start=1)
    )
    per_feature = f"<h3>Per AOI feature</h3><div class='tables'>{per_feature}</div>" if per_feature else ""
    return (
        "<section id='areas-section'><h2>Class areas</h2>"
        "<p class='note'>Areas on the ellipsoid, of pixels with a class.</p>"
        f"{_areas_table('areas', product.areas)}{per_feature}</section>"
    )


def _matrix(
    element_id: str,
    names: Sequence[str],
    cell: Mapping[tuple[str, str], float],
    corner: str,
    fmt: Callable[[float], str],
) -> str:
    """A square table with row and column totals; the diagonal is marked."""
    head = "".join(f"<th>{_swatch(n)}</th>" for n in names)
    body = []
    for row in names:
        cells = "".join(
            f"<td class='num{' diag' if row == col else ''}'>{fmt(cell.get((row, col), 0))}</td>" for col in names
        )
        row_total = sum(cell.get((row, col), 0) for col in names)
        body.append(f"<tr><th>{_swatch(row)}</th>{cells}<td class='num total'>{fmt(row_total)}</td></tr>")
    column_totals = "".join(f"<td class='num total'>{fmt(sum(cell.get((r, c), 0) for r in names))}</td>" for c in names)
    grand = fmt(sum(cell.values()))
    return (
        f"<table id='{element_id}' class='matrix'><thead><tr><th>{_e(corner)}</th>{head}<th>total</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody>"
        f"<tfoot><tr><th>total</th>{column_totals}<td class='num total'>{grand}</td></tr></tfoot></table>"
    )


def _change(product: RegionProduct, images: ReportImages) -> str:
    """Change map and transition matrix; nothing at all when the product has neither."""
    if images.change is None and not product.transitions_km2:
        return ""
    since = f" since <code>{_e(product.previous_item_id)}</code>" if product.previous_item_id else ""
    parts = [f"<section id='change-section'><h2>Change{since}</h2>"]
    if images.change is not None:
        legend = _legend(
            "change-legend",
            [(_hex(UNCHANGED_RGB), "unchanged")] + [(_hex(c.colour), f"now {c.name}") for c in schema.CLASSES],
        )
        parts.append(
            f"<figure>{_img(images.change, 'change-map', 'change map')}<figcaption>{legend}</figcaption></figure>"
        )
    if product.transitions_km2:
        cells = {(src, dst): km2 for src, row in product.transitions_km2.items() for dst, km2 in row.items()}
        names = _class_order([name for pair in cells for name in pair])
        parts.append(
            "<h3>Transitions (km², where both products are confident)</h3>"
            "<p class='note'>Rows: class before; columns: class now; the diagonal is unchanged.</p>"
            + _matrix("transitions", names, cells, "from \\ to", _km2)
        )
    parts.append("</section>")
    return "".join(parts)


def _check_agreement(agreement: Mapping[str, Any]) -> tuple[list[str], list[list[int]]]:
    """The class names and confusion matrix of an agreement record, refused when they do not fit."""
    names = [str(n) for n in agreement["classes"]]
    confusion = [[int(v) for v in row] for row in agreement["confusion"]]
    if len(confusion) != len(names) or any(len(row) != len(names) for row in confusion):
        raise ValueError(f"agreement: confusion must be {len(names)} x {len(names)} (one row and column per class)")
    return names, confusion


def _agreement(product: RegionProduct) -> str:
    """Agreement with the reference product: overall, per class, and the confusion matrix."""
    if product.agreement is None:
        return ""
    agreement = product.agreement
    names, confusion = _check_agreement(agreement)
    reference = agreement.get("reference")
    against = f" with {_e(reference)}" if reference else " with the reference product"
    per_class = agreement.get("per_class", {})
    rows = "".join(
        f"<tr><td>{_swatch(n)}</td><td class='num'>{_ratio(per_class.get(n, {}).get('producer'))}</td>"
        f"<td class='num'>{_ratio(per_class.get(n, {}).get('user'))}</td></tr>"
        for n in names
    )
    cells = {(r, c): confusion[i][j] for i, r in enumerate(names) for j, c in enumerate(names)}
    return (
        f"<section id='agreement-section'><h2>Agreement{against}</h2>"
        f"<p>Overall agreement: <b id='overall-agreement'>{_ratio(agreement.get('overall_agreement'))}</b> "
        f"of {sum(map(sum, confusion)):,} pixels compared.</p>"
        "<table id='agreement-per-class'><thead><tr><th>class</th><th>producer's (%)</th><th>user's (%)</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
        "<h3>Confusion matrix (pixels)</h3><p class='note'>Rows: this product; columns: the reference.</p>"
        + _matrix("confusion", names, cells, "product \\ reference", lambda v: f"{int(v):,}")
        + "</section>"
    )


def _ratio(value: float | None) -> str:
    return MISSING if value is None else f"{100 * float(value):.1f}"


SCENE_COLUMNS = ("short", "id", "short", "id", "short")
"""Cell classes of a scene row's text columns: ids may break anywhere, the rest never wraps."""


def _scene_row(scene: SceneUse, decided: int) -> str:
    cloud = MISSING if scene.cloud_cover is None else f"{scene.cloud_cover:.1f}"
    values = [
        scene.pair_id,
        scene.s2_id or MISSING,
        _when(scene.s2_datetime),
        scene.s1_id or MISSING,
        _when(scene.s1_datetime),
    ]
    text = "".join(f"<td class='{kind}'>{_e(v)}</td>" for v, kind in zip(values, SCENE_COLUMNS, strict=True))
    return (
        f"<tr><td class='num'>{scene.code}</td>{text}<td class='num'>{cloud}</td>"
        f"<td class='num'>{scene.pixels:,}</td><td class='num'>{_percent(scene.pixels, decided)}</td></tr>"
    )


def _scenes(product: RegionProduct) -> str:
    """The scene pairs that decided the product's pixels, numbered as in the source COG."""
    decided = sum(s.pixels for s in product.scenes)
    rows = "".join(_scene_row(s, decided) for s in product.scenes) or (
        f"<tr><td colspan='9'>{MISSING} no scenes recorded</td></tr>"
    )
    return (
        "<section id='scenes-section'><h2>Scenes used</h2>"
        "<p class='note'>Code: the value of the source COG's scene layer for the pixels that pair decided.</p>"
        "<table id='scenes'><thead><tr><th>code</th><th>pair</th><th>Sentinel-2</th><th>S2 time</th>"
        "<th>Sentinel-1</th><th>S1 time</th><th>cloud cover (%)</th><th>pixels decided</th><th>%</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>"
    )


def _lineage(product: RegionProduct) -> str:
    """Model and data the product came from, so it can be reproduced or traced."""
    lineage = product.lineage
    registered = (
        f"{lineage.registered_model} version {lineage.registered_version or MISSING}"
        if lineage.registered_model
        else MISSING
    )
    facts = [
        ("Served model", f"{lineage.served_model} version {lineage.served_version}"),
        ("Registered model", registered),
        ("Data hash (SHA-256)", lineage.data_hash),
        ("Software version", lineage.software_version),
        ("Previous product", product.previous_item_id or MISSING),
    ]
    items = "".join(f"<dt>{_e(k)}</dt><dd><code>{_e(v)}</code></dd>" for k, v in facts)
    return f"<section id='lineage-section'><h2>Model and lineage</h2><dl class='facts'>{items}</dl></section>"


def _asset_base(assets: Mapping[str, str]) -> str | None:
    """Folder the report lives in (or that holds every asset), from which links can be relative."""
    if "report" in assets:
        return posixpath.dirname(assets["report"])
    folders = {posixpath.dirname(uri) for uri in assets.values()}
    return folders.pop() if len(folders) == 1 else None


def _asset_link(uri: str, base: str | None) -> str:
    """A relative link when the asset lies under the report's folder, else the URI as text (no external URL)."""
    if base is not None:
        prefix = f"{base.rstrip('/')}/" if base else ""
        relative = uri[len(prefix) :] if uri.startswith(prefix) else ""
        if relative and "://" not in relative and not relative.startswith("/"):
            return f"<a href='{_e(quote(relative))}'>{_e(relative)}</a>"
    return f"<code>{_e(uri)}</code>"


def _assets(product: RegionProduct) -> str:
    base = _asset_base(product.assets)
    rows = "".join(
        f"<tr><td>{_e(ASSET_TITLES.get(role, role))}</td><td>{_asset_link(uri, base)}</td></tr>"
        for role, uri in product.assets.items()
        if role != "report"
    )
    if not rows:
        return ""
    return f"<section id='assets-section'><h2>Files</h2><table id='assets'><tbody>{rows}</tbody></table></section>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
section figure { margin: 0; display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
img.map { width: min(100%, 640px); height: auto; image-rendering: pixelated; border: 1px solid #999;
  background: repeating-conic-gradient(#ddd 0% 25%, #fff 0% 50%) 50% / 16px 16px; }
.legend { list-style: none; padding: 0; margin: 0; } .legend li { margin: .25em 0; }
.swatch { display: inline-block; width: 1em; height: 1em; margin-right: .45em; vertical-align: -.15em;
  border: 1px solid #555; }
.colourbar { width: 260px; } .colourbar .bar { height: 16px; border: 1px solid #555; }
.colourbar .ticks { display: flex; justify-content: space-between; font-size: .85em; }
.colourbar .barlabel { text-align: center; font-size: .9em; margin-top: .2em; }
table { border-collapse: collapse; margin: .8em 0; } caption { text-align: left; font-weight: bold; }
td, th { padding: .25em .6em; border-bottom: 1px solid #ddd; text-align: left; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.diag { background: #e8f1e8; font-weight: bold; } td.total { color: #555; }
.tables { display: flex; flex-wrap: wrap; gap: 1.5em; } .note { color: #555; font-size: .9em; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: .3em 1em; } dl.facts dd { margin: 0; }
code, td.id { word-break: break-all; } td.short { white-space: nowrap; }
#scenes { table-layout: fixed; width: 100%; }
#scenes td { overflow-wrap: anywhere; white-space: normal; font-size: .9em; }
#scenes th:nth-child(1) { width: 3em; } #scenes th:nth-child(2) { width: 26%; }
"""


def render_report(product: RegionProduct, images: ReportImages) -> str:
    """The product's report page: one static HTML document, every text escaped.

    Sections without content (change without an earlier product, agreement without a reference) are
    left out rather than shown empty.
    """
    title = f"Land cover of {product.region} on {product.target_date.isoformat()} (CloudLULC)"
    sections = [
        _header(product),
        _class_map(images),
        _confidence(images),
        _areas(product),
        _change(product, images),
        _agreement(product),
        _scenes(product),
        _lineage(product),
        _assets(product),
    ]
    body = "\n".join(s for s in sections if s)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
