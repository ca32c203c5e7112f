"""Quicklook pictures: what a person looks at before reading numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cloudlulc import schema
from cloudlulc.io.guard import check_outputs_apart, probe_writable
from cloudlulc.io.storage import staged_output

if TYPE_CHECKING:
    from cloudlulc.data.layout import Split

TRUE_COLOUR_GAIN = 3.5
"""Reflectance 0-0.29 spans the display range, the usual stretch for Sentinel-2 true colour."""


def true_colour(optical: np.ndarray) -> np.ndarray:
    """[12,H,W] reflectance to an [H,W,3] RGB image in [0, 1] (B04, B03, B02)."""
    return np.clip(np.moveaxis(optical[list(schema.TRUE_COLOUR)], 0, -1) * TRUE_COLOUR_GAIN, 0.0, 1.0)


def sar_false_colour(sar: np.ndarray) -> np.ndarray:
    """[2,H,W] scaled VV/VH to RGB: red VV, green VH, blue VV-VH (the usual dual-pol composite)."""
    vv, vh = sar[0], sar[1]
    return np.clip(np.dstack([vv, vh, 0.5 + (vv - vh)]), 0.0, 1.0)


def label_colours(label: np.ndarray) -> np.ndarray:
    """[H,W] class ids to RGB in [0, 1]; 255 (no label) is black."""
    palette = np.zeros((256, 3), np.float32)
    for lulc in schema.CLASSES:
        palette[lulc.id] = np.array(lulc.colour) / 255
    return palette[label]


CLOUD_HEX = ("#1a801a", "#bfd9f2", "#ffffff", "#404059")
"""Display colours of cloud codes 0 clear, 1 thin, 2 opaque, 3 shadow."""
CLOUD_COLOURS = np.array([[int(h[i : i + 2], 16) / 255 for i in (1, 3, 5)] for h in CLOUD_HEX], np.float32)


def dataset_quicklook(root: str, out_png: str, *, count: int = 4, split: Split = "test") -> str:
    """Grid of ``count`` samples: cloudy and clear true colour, SAR, label and cloud mask, with a legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from cloudlulc.data.dataset import CloudLULCDataset  # torch: only for dataset quicklooks, not map quicklooks

    check_outputs_apart({"--out": out_png}, datasets={"DATASET": root})
    probe_writable(out_png, "--out")
    dataset = CloudLULCDataset(root, split, return_clear=True, return_cloud_mask=True)
    picks = np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int)
    columns = ["Sentinel-2 cloudy", "Sentinel-2 clear (reference)", "Sentinel-1 VV/VH", "Label", "Cloud mask"]
    figure, axes = plt.subplots(
        len(picks), len(columns), figsize=(3 * len(columns), 3 * len(picks) + 0.8), squeeze=False
    )
    for row, index in enumerate(picks):
        sample = dataset[int(index)]
        images = [
            true_colour(sample["optical"].numpy()),
            true_colour(sample["clear"].numpy()),
            sar_false_colour(sample["sar"].numpy()),
            label_colours(sample["label"].numpy().astype(np.uint8)),
            CLOUD_COLOURS[np.clip(sample["cloud_mask"].numpy(), 0, 3)],
        ]
        for column, image in enumerate(images):
            axis = axes[row, column]
            axis.imshow(image, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(columns[column], fontsize=10)
        cover = np.isin(sample["cloud_mask"].numpy(), [schema.CLOUD_THIN, schema.CLOUD_OPAQUE]).mean()
        axes[row, 0].set_ylabel(f"{sample['name']}\ncloud {cover:.0%}", fontsize=9)
    # Outlined swatches, so that white (opaque cloud) stays visible.
    swatches = [("#{:02x}{:02x}{:02x}".format(*c.colour), f"{c.id} {c.name}") for c in schema.CLASSES]
    swatches += [(CLOUD_HEX[code], name) for code, name in schema.CLOUD_MASK_NAMES.items()]
    handles = [Patch(facecolor=colour, edgecolor="black", linewidth=0.5, label=text) for colour, text in swatches]
    figure.legend(handles=handles, loc="lower center", ncol=5, fontsize=9, frameon=False)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    with staged_output(out_png) as temp_path:
        figure.savefig(temp_path, dpi=80, format="png")
    plt.close(figure)
    return out_png
