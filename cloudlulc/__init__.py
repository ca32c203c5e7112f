"""CloudLULC: land use / land cover mapping under clouds by SAR-optical fusion, with its MLOps loop."""

__version__ = "0.1.0"
