"""Sentinel acquisitions to model-ready chips or scene stacks: STAC search, pairing, co-registration, outputs.

The stage is :func:`ingest` (search, pair, write every new pair, publish the index); docs/ingest.md
describes the choices (grid, resampling, offsets, commit protocol).
"""

from cloudlulc.ingest.outputs import ChipOptions
from cloudlulc.ingest.pairing import Pair, Pairing, pair_acquisitions
from cloudlulc.ingest.run import IngestOptions, IngestReport, ingest, ingest_pairing
from cloudlulc.ingest.stac import SearchQuery, load_aoi, parse_bbox, search
from cloudlulc.io.retry import RetryPolicy

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
