"""Sentinel acquisitions to model-ready chips or scene stacks: STAC search, pairing, co-registration, outputs.

The stage is :func:`ingest` (search, pair, write every new pair, publish the index); docs/ingest.md
describes the choices (grid, resampling, offsets, commit protocol). Names are imported on first use
(:mod:`cloudlulc.lazy`), so the CLI reads :mod:`cloudlulc.ingest.options` without the raster stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudlulc.lazy import lazy_names

if TYPE_CHECKING:
    from cloudlulc.ingest.outputs import ChipOptions
    from cloudlulc.ingest.pairing import Pair, Pairing, pair_acquisitions
    from cloudlulc.ingest.run import IngestOptions, IngestReport, ingest, ingest_pairing
    from cloudlulc.ingest.stac import SearchQuery, load_aoi, parse_bbox, search
    from cloudlulc.io.retry import RetryPolicy

__getattr__ = lazy_names(
    __name__,
    {
        "outputs": ["ChipOptions"],
        "pairing": ["Pair", "Pairing", "pair_acquisitions"],
        "run": ["IngestOptions", "IngestReport", "ingest", "ingest_pairing"],
        "stac": ["SearchQuery", "load_aoi", "parse_bbox", "search"],
        "cloudlulc.io.retry": ["RetryPolicy"],
    },
)

__all__ = [
    "ChipOptions",
    "IngestOptions",
    "IngestReport",
    "Pair",
    "Pairing",
    "RetryPolicy",
    "SearchQuery",
    "ingest",
    "ingest_pairing",
    "load_aoi",
    "pair_acquisitions",
    "parse_bbox",
    "search",
]
