"""What kind of file a path holds, from its first bytes: so a wrong file gets its own message.

A user who passes an ONNX model where a checkpoint is expected (or a GeoTIFF where a model is) should
read "this is an ONNX model", not "corrupt checkpoint".
"""

from __future__ import annotations

from pathlib import Path

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "a TIFF/GeoTIFF raster"),
    (b"MM\x00*", "a TIFF/GeoTIFF raster"),
    (b"II+\x00", "a BigTIFF raster"),
    (b"\x89PNG", "a PNG image"),
    (b"%PDF", "a PDF document"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x1f\x8b", "a gzip archive"),
)


def describe_file(path: str | Path) -> str | None:
    """A phrase such as ``"an ONNX model"`` for recognisable files that are not what a caller wanted; else None.

    Only kinds that are certain from the first bytes are named (ONNX is recognised by parsing its
    header fields); an empty file is named too. Zip archives (torch checkpoints) are not named.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError:
        return None
    if not head:
        return "an empty file"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head.lstrip()[:1] in (b"{", b"["):
        return "a JSON document"
    if _looks_like_onnx(path):
        return "an ONNX model"
    return None


def _looks_like_onnx(path: str | Path) -> bool:
    """An ONNX ModelProto parses and names an IR version and a graph (protobuf has no magic number)."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # any parse failure means "not ONNX"
        return False
    return bool(model.ir_version) and bool(model.graph.node)
