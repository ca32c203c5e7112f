"""The product report page, opened in a real headless Chromium: it must load clean and show the map.

Chromium and its driver come from Debian (``apt-get install -y chromium chromium-driver``) and are driven
with Selenium; a machine without them fails these tests with the install line instead of skipping them.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from cloudlulc import schema
from cloudlulc.io.rasters import RasterProfile, write_raster
from cloudlulc.products.change import CHANGE_NODATA, CLASS_COUNT
from cloudlulc.products.model import ClassArea, Lineage, RegionProduct, SceneUse
from cloudlulc.products.report import UNCHANGED_RGB, ReportImages, render_report, report_images

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = os.environ.get("CLOUDLULC_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CLOUDLULC_CHROMEDRIVER", "/usr/bin/chromedriver")
INSTALL = (
    "install Debian's Chromium and its driver (apt-get update && apt-get install -y chromium chromium-driver) "
    "and Selenium (pip install -e '.[dev]'), or point CLOUDLULC_CHROMIUM / CLOUDLULC_CHROMEDRIVER at them"
)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)
SIDE = 128
PIXEL_KM2 = 1e-4
"""10 m pixels."""
REGION = "Ghent & <Leie>"
"""A region name with markup characters: the page must show it as text."""
TARGET = date(2024, 6, 15)


# --- A small real product -----------------------------------------------------------------------


def _class_raster() -> np.ndarray:
    """Six class blocks, a nodata corner."""
    classes = np.zeros((SIDE, SIDE), np.uint8)
    for class_id in range(CLASS_COUNT):
        classes[:, class_id * SIDE // CLASS_COUNT :] = class_id
    classes[:20, :20] = 255
    return classes


def _previous_raster(classes: np.ndarray) -> np.ndarray:
    """The earlier map: cropland where built-up land is now, grassland in a block of forest."""
    previous = classes.copy()
    previous[classes == 4] = 5
    previous[60:90, 25:40] = 2
    return previous


def _areas(classes: np.ndarray) -> tuple[ClassArea, ...]:
    return tuple(
        ClassArea(c.id, c.name, float((classes == c.id).sum()) * PIXEL_KM2)
        for c in schema.CLASSES
        if (classes == c.id).any()
    )


def _write(path: Path, array: np.ndarray, nodata: int) -> str:
    profile = RasterProfile(
        crs=CRS.from_epsg(32631), transform=Affine(10, 0, 500_000, 0, -10, 5_650_000), nodata=nodata
    )
    write_raster(str(path), array, profile, cog=True)
    return str(path)


def _lineage() -> Lineage:
    return Lineage(
        served_model="cloudlulc-net",
        served_version="3",
        registered_model="CloudLULC-Net",
        registered_version="7",
        data_hash="ab" * 32,
        software_version="0.1.0",
    )


def _scenes() -> tuple[SceneUse, ...]:
    when = datetime(2024, 6, 14, 10, 46, tzinfo=UTC)
    return (
        SceneUse(1, "pair-a", "S2B_MSIL2A_20240614_T31UES", when, "S1A_IW_GRDH_20240614", when, 12.5, 9000),
        SceneUse(2, "pair-b", None, None, "S1A_IW_GRDH_20240613", when, None, 6984),
    )


def _agreement(classes: np.ndarray) -> dict[str, Any]:
    names = list(schema.CLASS_NAMES)
    reference = classes.copy()
    reference[100:, 50:70] = 0
    valid = classes < CLASS_COUNT
    pairs = classes[valid].astype(int) * CLASS_COUNT + reference[valid]
    confusion = np.bincount(pairs, minlength=CLASS_COUNT**2).reshape(CLASS_COUNT, CLASS_COUNT)
    diagonal = np.diag(confusion)
    return {
        "reference": "ESA WorldCover 2021 v200",
        "classes": names,
        "confusion": confusion.tolist(),
        "overall_agreement": float(diagonal.sum() / confusion.sum()),
        "per_class": {
            name: {
                "producer": float(diagonal[i] / confusion[:, i].sum()),
                "user": float(diagonal[i] / confusion[i].sum()),
            }
            for i, name in enumerate(names)
        },
    }


def _transitions(classes: np.ndarray, previous: np.ndarray) -> dict[str, dict[str, float]]:
    names = schema.CLASS_NAMES
    valid = classes < CLASS_COUNT
    counts = np.bincount(previous[valid].astype(int) * CLASS_COUNT + classes[valid], minlength=CLASS_COUNT**2)
    return {names[i]: {names[j]: counts[i * CLASS_COUNT + j] * PIXEL_KM2 for j in range(CLASS_COUNT)} for i in range(6)}


@pytest.fixture
def product(tmp_path: Path) -> RegionProduct:
    """A full product in ``tmp_path/product``: class, confidence and change COGs, areas, agreement."""
    folder = tmp_path / "product"
    folder.mkdir()
    classes = _class_raster()
    previous = _previous_raster(classes)
    valid = classes < CLASS_COUNT
    ramp = np.tile(np.linspace(1, 255, SIDE).round().astype(np.uint8), (SIDE, 1))
    codes = np.where(valid, previous.astype(np.int32) * CLASS_COUNT + classes, CHANGE_NODATA).astype(np.uint8)
    assets = {
        "classes": _write(folder / "classes.tif", classes, 255),
        "confidence": _write(folder / "confidence.tif", np.where(valid, ramp, 0).astype(np.uint8), 0),
        "change": _write(folder / "change.tif", codes, CHANGE_NODATA),
        "areas": str(folder / "areas.csv"),
        "report": str(folder / "report.html"),
    }
    return RegionProduct(
        region=REGION,
        target_date=TARGET,
        item_id="ghent-2024-06-15",
        epsg=32631,
        transform=(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_650_000.0),
        width=SIDE,
        height=SIDE,
        aoi={"type": "Polygon", "coordinates": []},
        assets=assets,
        scenes=_scenes(),
        lineage=_lineage(),
        areas=_areas(classes),
        feature_areas=(_areas(classes[: SIDE // 2]), _areas(classes[SIDE // 2 :])),
        previous_item_id="ghent-2024-05-15",
        transitions_km2=_transitions(classes, previous),
        agreement=_agreement(classes),
    )


def _images(product: RegionProduct, *, change: bool = True) -> ReportImages:
    assets = product.assets
    return report_images(assets["classes"], assets["confidence"], assets["change"] if change else None)


# --- The browser --------------------------------------------------------------------------------


def _stop_leftovers(profile: Path) -> list[int]:
    """End any Chromium process still using ``profile`` (ours alone: the profile is fresh); their ids."""
    import psutil

    left = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if f"--user-data-dir={profile}" in (process.info["cmdline"] or []):
            left.append(process.pid)
            process.kill()
    return left


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless Chromium with a fresh profile for this module, always stopped afterwards."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).is_file()]
    if missing:
        pytest.fail(f"no {', '.join(missing)}: {INSTALL}", pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as error:
        pytest.fail(f"{error}: {INSTALL}", pytrace=False)
    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"))
    driver = None
    try:
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        service.stop()
        left = _stop_leftovers(profile)
    assert not left, f"Chromium processes {left} outlived driver.quit() and were killed"


def _open(browser: WebDriver, page: Path) -> list[str]:
    """Load ``page`` from disk; the console errors and failed requests it caused."""
    browser.get("about:blank")  # the last page's requests end (or are aborted) here, not during this page
    for kind in ("browser", "performance"):  # drop what earlier pages left
        browser.get_log(kind)
    browser.get(page.as_uri())
    problems = [f"console: {e['message']}" for e in browser.get_log("browser") if e["level"] in {"SEVERE", "ERROR"}]
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.loadingFailed":
            problems.append(f"request failed: {params.get('errorText')} ({params.get('type')})")
        elif message["method"] == "Network.responseReceived" and params["response"].get("status", 200) >= 400:
            problems.append(f"request answered {params['response']['status']}: {params['response']['url']}")
    return problems


def _screenshot(browser: WebDriver, out: Path) -> np.ndarray:
    """Whole page as one screenshot saved to ``out``; its pixels as [H,W,3] uint8."""
    import matplotlib.image

    browser.set_window_size(1280, 1000)  # the page's own height, not the last page's window
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, int(height) + 200)
    png = browser.get_screenshot_as_png()
    out.write_bytes(png)
    return (matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3] * 255).round().astype(np.uint8)


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _write_report(product: RegionProduct, images: ReportImages) -> Path:
    page = Path(product.assets["report"])
    page.write_text(render_report(product, images), encoding="utf-8")
    return page


# --- Tests --------------------------------------------------------------------------------------


def test_full_report_loads_clean_and_shows_the_map(browser: WebDriver, product: RegionProduct, tmp_path: Path):
    from selenium.webdriver.common.by import By

    page = _write_report(product, _images(product))
    assert _open(browser, page) == []
    assert REGION in browser.title and TARGET.isoformat() in browser.title

    legend = browser.find_element(By.ID, "class-legend").text
    assert all(name in legend for name in schema.CLASS_NAMES), legend
    total = sum(area.km2 for area in product.areas)
    rows = browser.find_elements(By.CSS_SELECTOR, "#areas tbody tr")
    assert len(rows) == len(product.areas)
    shown = [_number(row.find_elements(By.TAG_NAME, "td")[1].text) for row in rows]
    assert sum(shown) == pytest.approx(total, abs=0.005 * len(rows))
    assert _number(browser.find_element(By.CSS_SELECTOR, "#areas tfoot td").text) == pytest.approx(total, abs=0.005)
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.areas")) == 1 + len(product.feature_areas)

    for element_id in ("class-map", "confidence-map", "change-map"):
        loaded = browser.execute_script(
            f"const i = document.getElementById('{element_id}'); return i.complete && i.naturalWidth"
        )
        assert loaded == SIDE, element_id
    assert "probability" in browser.find_element(By.ID, "confidence-bar").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#transitions tbody tr")) == CLASS_COUNT
    assert browser.find_element(By.ID, "confusion").is_displayed()
    overall = (product.agreement or {})["overall_agreement"]
    assert browser.find_element(By.ID, "overall-agreement").text == f"{100 * overall:.1f}"
    assert (
        browser.find_element(By.LINK_TEXT, "classes.tif").get_attribute("href")
        == Path(product.assets["classes"]).as_uri()
    )
    assert "S2B_MSIL2A_20240614_T31UES" in browser.find_element(By.ID, "scenes").text
    assert "ab" * 32 in browser.find_element(By.ID, "lineage-section").text

    pixels = _screenshot(browser, tmp_path / "report-full.png")
    box = browser.execute_script(
        "const r = document.getElementById('class-map').getBoundingClientRect();"
        "return [r.left, r.top, r.right, r.bottom, window.devicePixelRatio];"
    )
    left, top, right, bottom = (round(v * box[4]) for v in box[:4])
    inside = pixels[top + 2 : bottom - 2, left + 2 : right - 2].reshape(-1, 3)
    assert inside.size and len(np.unique(inside, axis=0)) > 1, "the class map is blank in the screenshot"


def test_report_without_change_or_agreement_leaves_those_sections_out(
    browser: WebDriver, product: RegionProduct, tmp_path: Path
):
    from selenium.webdriver.common.by import By

    assets = {role: uri for role, uri in product.assets.items() if role != "change"}
    bare = replace(product, assets=assets, previous_item_id=None, transitions_km2={}, agreement=None, feature_areas=())
    page = _write_report(bare, _images(bare, change=False))
    assert _open(browser, page) == []
    for absent in ("change-section", "change-map", "transitions", "agreement-section", "confusion"):
        assert browser.find_elements(By.ID, absent) == [], absent
    headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h2")]
    assert headings == ["Land cover", "Confidence", "Class areas", "Scenes used", "Model and lineage", "Files"]
    assert browser.find_elements(By.CSS_SELECTOR, "table.areas") == [browser.find_element(By.ID, "areas")]
    assert "change.tif" not in browser.find_element(By.ID, "assets").text
    _screenshot(browser, tmp_path / "report-bare.png")


def test_the_browser_check_sees_console_errors_and_failed_requests(browser: WebDriver, tmp_path: Path):
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><title>broken</title><img src='missing.png'><script>console.error('boom')</script>")
    problems = _open(browser, page)
    assert any("boom" in p for p in problems), problems
    assert any(p.startswith("request failed: net::ERR_FILE_NOT_FOUND") for p in problems), problems


# --- Without a browser --------------------------------------------------------------------------


def test_page_is_self_contained_and_escaped(product: RegionProduct):
    text = render_report(product, _images(product))
    assert "<script" not in text.lower()
    assert not re.search(r"(src|href)\s*=\s*['\"]?\s*(https?:|//)", text), "the page must not load anything external"
    assert "Ghent &amp; &lt;Leie&gt;" in text and REGION not in text
    assert "<a href='confidence.tif'>confidence.tif</a>" in text  # beside the report: relative


def test_assets_elsewhere_are_named_not_linked(product: RegionProduct):
    assets = {**product.assets, "report": "s3://bucket/products/ghent/report.html"}
    assets["quicklook"] = "s3://bucket/products/ghent/quick look.png"
    text = render_report(replace(product, assets=assets), _images(product, change=False))
    assert "<a href='quick%20look.png'>quick look.png</a>" in text
    assert f"<code>{product.assets['classes']}</code>" in text


def test_images_are_decimated_transparent_on_nodata_and_grey_where_unchanged(product: RegionProduct):
    import matplotlib.image

    images = report_images(
        product.assets["classes"], product.assets["confidence"], product.assets["change"], max_side=32
    )
    classes, confidence, change = (
        (matplotlib.image.imread(io.BytesIO(png), format="png") * 255).round().astype(np.uint8)
        for png in (images.classes, images.confidence, images.change)
    )
    assert classes.shape == confidence.shape == change.shape == (32, 32, 4)
    assert classes[0, 0, 3] == confidence[0, 0, 3] == change[0, 0, 3] == 0  # the nodata corner
    assert tuple(classes[-1, 0, :3]) == schema.CLASSES[0].colour and classes[-1, 0, 3] == 255
    assert tuple(change[-1, 0, :3]) == UNCHANGED_RGB  # water stayed water
    built_up = schema.CLASSES[4]
    assert tuple(change[-1, 4 * 32 // CLASS_COUNT + 1, :3]) == built_up.colour  # cropland became built-up
    assert not np.array_equal(confidence[-1, 1, :3], confidence[-1, -1, :3])  # the ramp shows


def test_agreement_with_a_matrix_of_the_wrong_shape_is_refused(product: RegionProduct):
    broken = replace(product, agreement={**(product.agreement or {}), "confusion": [[1, 2], [3, 4]]})
    with pytest.raises(ValueError, match="confusion must be 6 x 6"):
        render_report(broken, _images(product, change=False))
