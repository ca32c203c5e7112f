"""Pairing each Sentinel-2 acquisition with the Sentinel-1 acquisition that best complements it.

Rule (DATA.md, our tie-breaks): among Sentinel-1 acquisitions within the window (default +/- 6 days)
whose footprint overlaps the part of the area of interest the Sentinel-2 scene covers, prefer one
that covers all of that part, then the smallest time gap, then the larger coverage, then the id.
Sentinel-2 acquisitions that find no partner are returned with the reason, never dropped silently;
:meth:`Unpaired.alone` makes one a Sentinel-2-only "pair" for mapping with a model trained with
modality dropout (``ingest run --mode scenes --s2-only``).
"""

from __future__ import annotations

from dataclasses import dataclass

from shapely.geometry.base import BaseGeometry

from cloudlulc.ingest.stac import Acquisition, SearchResult

S2_ONLY = "S2-only"
"""Second half of the id of a Sentinel-2 acquisition ingested without a Sentinel-1 partner."""
FULL_COVERAGE = 0.999
"""Coverage (fraction of the target area) from which an S1 footprint counts as covering it fully."""


@dataclass(frozen=True)
class Pair:
    """A Sentinel-2 acquisition and its Sentinel-1 partner (None: a Sentinel-2-only stack)."""

    s2: Acquisition
    s1: Acquisition | None
    coverage: float
    """Fraction of the S2 scene's part of the AOI that the S1 footprint covers (0 without one)."""

    @property
    def id(self) -> str:
        """Stable identity of the pair (both item ids; ``<s2>__S2-only`` without a partner)."""
        return f"{self.s2.id}__{self.s1.id if self.s1 else S2_ONLY}"

    @property
    def gap_days(self) -> float | None:
        """Days from the SAR to the optical acquisition (positive: SAR came first); None without SAR."""
        return None if self.s1 is None else (self.s2.when - self.s1.when).total_seconds() / 86_400


@dataclass(frozen=True)
class Unpaired:
    """A Sentinel-2 acquisition without a partner, and why."""

    s2: Acquisition
    reason: str

    def alone(self) -> Pair:
        """This acquisition as a Sentinel-2-only pair (no SAR; mapped with the SAR input absent)."""
        return Pair(self.s2, None, 0.0)


@dataclass(frozen=True)
class Pairing:
    """All pairs and all Sentinel-2 acquisitions left without a partner."""

    pairs: tuple[Pair, ...]
    unpaired: tuple[Unpaired, ...]


def coverage_of(s1: Acquisition, target: BaseGeometry) -> float:
    """Fraction of ``target``'s area inside the S1 footprint (0 when ``target`` is empty)."""
    if target.is_empty or target.area == 0:
        return 0.0
    return float(s1.footprint.intersection(target).area / target.area)


def pair_acquisitions(found: SearchResult, aoi: BaseGeometry, window_days: float) -> Pairing:
    """Pair every Sentinel-2 acquisition of ``found`` (see the module rule); report the rest."""
    pairs: list[Pair] = []
    unpaired: list[Unpaired] = []
    for s2 in found.s2:
        target = s2.footprint.intersection(aoi)
        in_window = [s1 for s1 in found.s1 if abs((s2.when - s1.when).total_seconds()) <= window_days * 86_400]
        if not in_window:
            unpaired.append(
                Unpaired(s2, f"no Sentinel-1 acquisition over the area of interest within +/- {window_days:g} days")
            )
            continue
        scored = [(coverage_of(s1, target), s1) for s1 in in_window]
        overlapping = [(c, s1) for c, s1 in scored if c > 0]
        if not overlapping:
            ids = ", ".join(s1.id for s1 in in_window)
            unpaired.append(
                Unpaired(s2, f"no Sentinel-1 acquisition within +/- {window_days:g} days overlaps it ({ids})")
            )
            continue
        coverage, best = min(
            overlapping,
            key=lambda cs: (cs[0] < FULL_COVERAGE, abs((s2.when - cs[1].when).total_seconds()), -cs[0], cs[1].id),
        )
        pairs.append(Pair(s2, best, coverage))
    return Pairing(tuple(pairs), tuple(unpaired))
