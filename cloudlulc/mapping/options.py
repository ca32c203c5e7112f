"""The mapping stage's options: how a scene is cut into tiles and fed to a predictor, for every face.

``cloudlulc map``, the regional-mapping pipeline's parameters and :func:`cloudlulc.mapping.map_scene`
all take this model, so a default, a range or the tile/overlap rule is written once (the rule itself
lives with the tile geometry, :func:`cloudlulc.mapping.tiling.check_tile_parameters`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from cloudlulc.mapping.tiling import SIZE_MULTIPLE, check_tile_parameters


class MapOptions(BaseModel):
    """Tiling and batching of one mapping run; none of them changes the map's pixels but tile and overlap."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tile: int = Field(
        512, ge=SIZE_MULTIPLE, le=4096, multiple_of=SIZE_MULTIPLE, description="Tile side in pixels, a multiple of 32."
    )
    overlap: int = Field(
        64, ge=0, le=2047, description="Overlap of neighbouring tiles in pixels, under half a tile; blended smoothly."
    )
    batch_size: int = Field(4, ge=1, le=256, description="Tiles per predictor call (per Triton request).")
    in_flight: int = Field(2, ge=1, le=64, description="Predictor calls running at once (does not change the map).")

    @field_validator("overlap")
    @classmethod
    def _under_half_a_tile(cls, overlap: int, info: ValidationInfo) -> int:
        tile = info.data.get("tile")  # absent when the tile itself was refused
        if tile is not None:
            try:
                check_tile_parameters(tile, overlap)
            except ValueError as error:
                raise ValueError(f"{error} with tile {tile}") from None
        return overlap


DEFAULT_MAP_OPTIONS = MapOptions()
