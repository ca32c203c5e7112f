"""Regional mapping: a whole Sentinel-2 scene and its Sentinel-1 pair to a class COG, with any predictor.

``map_scene`` takes a prediction function (an in-process network, an ONNX Runtime session, a Triton
client), so how predictions are computed stays outside this package.
"""

from cloudlulc.io.rasters import publish_cog
from cloudlulc.mapping.areas import ClassArea, ClassAreas, class_areas, row_areas_m2
from cloudlulc.mapping.options import DEFAULT_MAP_OPTIONS, MapOptions
from cloudlulc.mapping.quicklook import write_quicklook
from cloudlulc.mapping.region import MapResult, Predictor, map_scene, sidecar_uris
from cloudlulc.mapping.scene_pair import SarUnits, SceneGrid, SceneReader, SceneWindow
from cloudlulc.mapping.tiling import TileGrid, blend_weights, pad_to_tile, tile_origins
from cloudlulc.mapping.writer import work_paths

__all__ = [
    "DEFAULT_MAP_OPTIONS",
    "ClassArea",
    "ClassAreas",
    "MapOptions",
    "MapResult",
    "Predictor",
    "SarUnits",
    "SceneGrid",
    "SceneReader",
    "SceneWindow",
    "TileGrid",
    "blend_weights",
    "class_areas",
    "map_scene",
    "pad_to_tile",
    "publish_cog",
    "row_areas_m2",
    "sidecar_uris",
    "tile_origins",
    "work_paths",
    "write_quicklook",
]
