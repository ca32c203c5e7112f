"""The overlapping tile grid over a scene and the weights that blend overlapping predictions.

Pure functions of sizes, so the geometry of a mapping run is decided (and unit-tested) apart from any
I/O. Tiles keep their full size everywhere: the last tile of a row or column is shifted inward rather
than cut, and only a scene smaller than one tile is padded (by reflection, see :func:`pad_to_tile`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from cloudlulc import schema

SIZE_MULTIPLE = schema.SIZE_MULTIPLE

MIN_WEIGHT = 1e-3
"""Smallest blending weight: a tile's outermost pixels still count where no other tile covers them."""


def check_tile_parameters(tile: int, overlap: int) -> None:
    """Raise ValueError for a tile size the network cannot take or an overlap the blending cannot honour.

    The one rule every face applies (``cloudlulc map``, the mapping pipeline's parameters, the library):
    the blending taper ramps over ``overlap`` pixels at both ends of a tile, so an overlap of half the
    tile or more would be blended over less than asked while still costing the extra tiles.
    """
    if tile <= 0 or tile % SIZE_MULTIPLE:
        raise ValueError(f"tile must be a positive multiple of {SIZE_MULTIPLE}, got {tile}")
    if not 0 <= 2 * overlap < tile:
        raise ValueError(f"overlap must be in [0, tile / 2) = [0, {tile // 2}), got {overlap}")


def tile_origins(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Start offsets of tiles along one axis, stride ``tile - overlap``, the last one flush with the end.

    Args:
        length: pixels along the axis (rows or columns of the scene).
        tile: tile size along the axis.
        overlap: minimum overlap of neighbouring tiles; the last tile may overlap more.

    Returns:
        Increasing offsets; ``(0,)`` when the scene is not longer than one tile (it is padded instead).
    """
    check_tile_parameters(tile, overlap)
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    if length <= tile:
        return (0,)
    stride = tile - overlap
    origins = list(range(0, length - tile, stride))
    origins.append(length - tile)  # shifted inward: full-size, flush with the far edge
    return tuple(origins)


@dataclass(frozen=True)
class TileGrid:
    """Tiles over a ``height`` x ``width`` scene in row-major order; tile rows are the unit of streaming."""

    height: int
    width: int
    tile: int
    overlap: int

    def __post_init__(self) -> None:
        check_tile_parameters(self.tile, self.overlap)

    @cached_property
    def row_origins(self) -> tuple[int, ...]:
        """First scene row of each tile row."""
        return tile_origins(self.height, self.tile, self.overlap)

    @cached_property
    def col_origins(self) -> tuple[int, ...]:
        """First scene column of each tile column."""
        return tile_origins(self.width, self.tile, self.overlap)

    @property
    def tile_count(self) -> int:
        """Number of tiles."""
        return len(self.row_origins) * len(self.col_origins)

    def tiles(self) -> list[tuple[int, int, int]]:
        """``(tile_row, row, col)`` of every tile, row-major: the order predictions are accumulated in."""
        return [(k, row, col) for k, row in enumerate(self.row_origins) for col in self.col_origins]

    def tile_shape(self, row: int, col: int) -> tuple[int, int]:
        """Rows and columns of the tile at ``(row, col)`` that lie inside the scene."""
        return min(self.tile, self.height - row), min(self.tile, self.width - col)

    def final_rows(self, tile_row: int) -> int:
        """Scene rows ``[0, n)`` that no later tile row touches once ``tile_row`` has been accumulated."""
        origins = self.row_origins
        return origins[tile_row + 1] if tile_row + 1 < len(origins) else self.height

    def first_tile_row_reaching(self, row: int) -> int:
        """Index of the first tile row that covers scene row ``row`` or any row after it."""
        for index, origin in enumerate(self.row_origins):
            if min(origin + self.tile, self.height) > row:
                return index
        return len(self.row_origins)


def taper(length: int, ramp: int) -> np.ndarray:
    """1-D weights: a raised-cosine ramp over ``ramp`` pixels at both ends, 1 in between, never 0.

    Args:
        length: pixels along the axis.
        ramp: pixels over which the weight rises; 0 gives a flat window.
    """
    weights = np.ones(length, np.float64)
    ramp = min(ramp, length // 2)
    if ramp > 0:
        rise = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)  # (0, 1), symmetric about the middle
        weights[:ramp] = rise
        weights[length - ramp :] = rise[::-1]
    return np.maximum(weights, MIN_WEIGHT).astype(np.float32)


def blend_weights(tile: int, overlap: int) -> np.ndarray:
    """2-D blending window [tile, tile]: the outer product of two tapers over the overlap, all > 0.

    Where tiles overlap, predictions near a tile's border (where the network sees padding instead of
    context) count less than predictions from the middle of the neighbouring tile; where only one tile
    covers a pixel (scene edges) its weight, however small, is divided out again.
    """
    check_tile_parameters(tile, overlap)
    profile = taper(tile, overlap)
    return np.outer(profile, profile)


def pad_to_tile(array: np.ndarray, tile: int) -> np.ndarray:
    """Pad the last two axes of ``array`` at their far end to ``tile`` by reflection (a scene smaller than a tile).

    Reflection keeps image statistics at the border, unlike zeros; numpy repeats the reflection when the
    array is shorter than the padding.
    """
    rows, cols = array.shape[-2:]
    if rows == tile and cols == tile:
        return array
    if rows > tile or cols > tile:
        raise ValueError(f"array of {rows}x{cols} is larger than the tile {tile}")
    pad = [(0, 0)] * (array.ndim - 2) + [(0, tile - rows), (0, tile - cols)]
    return np.pad(array, pad, mode="reflect")
