"""A quicklook PNG of a mapped scene: true colour, SAR false colour and the map side by side, with a legend.

Every panel comes from a decimated read (file overviews where present, a warp straight onto the
coarse grid for SAR), so a quicklook of a full Sentinel-2 tile never holds the scene in memory.
"""

from __future__ import annotations

import numpy as np
from rasterio.enums import Resampling

from cloudlulc import schema
from cloudlulc.io.rasters import open_raster
from cloudlulc.io.storage import staged_output
from cloudlulc.mapping.scene_pair import SceneReader

QUICKLOOK_SIDE = 768
"""Longest side of each panel, in pixels."""


def read_map_overview(map_uri: str, height: int, width: int) -> np.ndarray:
    """Class ids of a map decimated to ``height`` x ``width`` (nearest; COG overviews are used)."""
    with open_raster(map_uri) as dataset:
        return dataset.read(1, out_shape=(height, width), resampling=Resampling.nearest)


def write_quicklook(scene: SceneReader, map_uri: str, out_png: str, *, side: int = QUICKLOOK_SIDE) -> str:
    """Render the quicklook of ``map_uri`` and its inputs to ``out_png`` (local path or ``s3://``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from cloudlulc.quicklook import label_colours, sar_false_colour, true_colour

    grid, inputs = scene.overview(side)
    classes = read_map_overview(map_uri, grid.height, grid.width)
    invalid = ~inputs.valid[..., None]
    absent = {"S2 only": "Sentinel-1", "S1 only": "Sentinel-2"}.get(scene.modalities)
    panels = [
        (
            "Sentinel-2 true colour" + (" (absent)" if absent == "Sentinel-2" else ""),
            np.where(invalid, 0.0, true_colour(inputs.optical)),
        ),
        (
            "Sentinel-1 VV / VH" + (" (absent)" if absent == "Sentinel-1" else ""),
            np.where(invalid, 0.0, sar_false_colour(inputs.sar)),
        ),
        ("Land cover", label_colours(classes)),
    ]
    aspect = grid.height / grid.width
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2 * aspect + 1.1), squeeze=False)
    for axis, (title, image) in zip(axes[0], panels, strict=True):
        axis.imshow(image, interpolation="nearest")
        axis.set_title(title, fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    handles = [
        Patch(
            facecolor="#{:02x}{:02x}{:02x}".format(*c.colour),
            edgecolor="black",
            linewidth=0.5,
            label=f"{c.id} {c.name}",
        )
        for c in schema.CLASSES
    ]
    handles.append(Patch(facecolor="black", edgecolor="black", linewidth=0.5, label="no data"))
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    with staged_output(out_png) as temp_path:
        figure.savefig(temp_path, dpi=90, format="png")
    plt.close(figure)
    return out_png
