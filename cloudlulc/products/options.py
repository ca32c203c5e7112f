"""The regional product stage's options, shared by ``cloudlulc product``, the mapping pipeline and the library."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field


class ProductOptions(BaseModel):
    """Which region, which date, and how the product is judged against the past and a reference."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$", description="Region name (paths and item ids).")
    aoi: str = Field(min_length=1, description="Area of interest: a GeoJSON file, or west,south,east,north degrees.")
    target_date: date = Field(description="The product's date (YYYY-MM-DD).")
    window_days: int = Field(
        15,
        ge=0,
        le=366,
        description="Scenes acquired from this many days before the target date up to the target date feed it.",
    )
    crs: str | None = Field(None, description="Product CRS (projected, metres) [default: the AOI's UTM zone].")
    min_change_confidence: float = Field(
        0.5, gt=0, le=1, description="Calibrated probability both products need at a pixel for it to count as change."
    )
    reference: str | None = Field(
        None, description="Reference land-cover raster (e.g. ESA WorldCover) to measure agreement with."
    )
    reference_table: str = Field("worldcover", min_length=1, description="Remap table of the reference's codes.")

    @property
    def item_id(self) -> str:
        """The product's STAC item id: region and target date."""
        return f"{self.region}-{self.target_date:%Y%m%d}"
