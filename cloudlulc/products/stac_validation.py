"""Offline validation of STAC documents: the core and extension schemas ship with the package, never fetched.

pystac bundles the STAC core schemas; the extension schemas of the exact versions pystac writes
(projection, raster, file, classification, and PROJJSON) ship in ``stac_schemas`` with their
provenance. A validator pre-filled with both refuses any schema it would have to download, so a
product is validated the same way on a machine with no network.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Iterable, Iterator
from importlib.resources.abc import Traversable
from typing import Any
from urllib.parse import urldefrag, urljoin

import pystac
from pystac.validation import JsonSchemaSTACValidator

from cloudlulc.errors import DataError

# --- Offline validation -------------------------------------------------------------------------------------------

SCHEMA_FOLDER = "stac_schemas"


class SchemaNotShippedError(LookupError):
    """Validation reached for a schema that is not shipped: validating would need the network."""


class OfflineValidator(JsonSchemaSTACValidator):
    """pystac's JSON-schema validator over a closed set of local schemas; a schema it lacks is an error."""

    def __init__(self, schemas: dict[str, dict[str, Any]]) -> None:
        super().__init__()
        self.schema_cache.update(schemas)
        missing = _unresolved_refs(self.schema_cache)
        if missing:
            raise SchemaNotShippedError(f"schemas referenced but not shipped: {missing}")

    def _get_schema(self, schema_uri: str) -> dict[str, Any]:
        """Every lookup pystac or ``referencing`` makes lands here; never fall through to a download."""
        try:
            return self.schema_cache[schema_uri]
        except KeyError:
            raise SchemaNotShippedError(
                f"{schema_uri} is not shipped; validating against it needs the network"
            ) from None


def _schema_files(folder: Traversable) -> Iterable[Traversable]:
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _schema_files(entry)
        elif entry.name.endswith(".json"):
            yield entry


def shipped_schemas() -> dict[str, dict[str, Any]]:
    """Extension schemas of this package by URI (their ``$id`` without the empty fragment)."""
    folder = importlib.resources.files(__package__ or "cloudlulc.products").joinpath(SCHEMA_FOLDER)
    schemas = {}
    for path in _schema_files(folder):
        document = json.loads(path.read_text(encoding="utf-8"))
        schemas[urldefrag(document["$id"]).url] = document
    return schemas


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _unresolved_refs(cache: dict[str, dict[str, Any]]) -> list[str]:
    """``$ref`` targets of cached schemas that are neither cached nor a JSON-schema metaschema (a download each).

    jsonschema resolves metaschemas (``http://json-schema.org/draft-07/schema``) from its own bundled copies.
    """
    from jsonschema_specifications import REGISTRY as METASCHEMAS

    known = {*cache, *(urldefrag(uri).url for uri in METASCHEMAS)}
    missing = {
        f"{ref} (from {uri})"
        for uri, document in cache.items()
        for ref in _refs(document)
        if urldefrag(urljoin(uri, ref)).url not in known
    }
    return sorted(missing)


@functools.cache
def offline_validator() -> OfflineValidator:
    """The process-wide validator: pystac's bundled core schemas plus the shipped extension schemas."""
    return OfflineValidator(shipped_schemas())


MESSAGE_CHARS = 300
STAC_TYPES = {
    "Feature": pystac.STACObjectType.ITEM,
    "Collection": pystac.STACObjectType.COLLECTION,
    "Catalog": pystac.STACObjectType.CATALOG,
}


def validate_stac(stac_dict: dict[str, Any]) -> None:
    """Validate a STAC item, collection or catalogue dict against its core and extension schemas, offline.

    Raises:
        DataError: naming the object and the first schema error, or a schema that is not shipped.
    """
    kind = STAC_TYPES.get(str(stac_dict.get("type")))
    noun = {"Feature": "item"}.get(str(stac_dict.get("type")), str(stac_dict.get("type", "object")).lower())
    name = f"STAC {noun} {stac_dict.get('id', '(no id)')}"
    if kind is None:
        raise DataError(name, f"type {stac_dict.get('type')!r} is not one of {sorted(STAC_TYPES)}")
    validator = offline_validator()
    version = str(stac_dict.get("stac_version", ""))
    core = validator.schema_uri_map.get_object_schema_uri(kind, version)
    document = json.loads(json.dumps(stac_dict))
    for uri in [core, *stac_dict.get("stac_extensions", [])]:
        if uri not in validator.schema_cache:
            raise DataError(name, f"schema {uri} is not shipped with cloudlulc; validating it would need the network")
        try:
            if uri == core:
                validator.validate_core(document, kind, version)
            else:
                validator.validate_extension(document, kind, version, uri)
        except pystac.STACValidationError as error:
            raise DataError(name, f"fails {uri}: {_first_error(error)}") from error
        except SchemaNotShippedError as error:
            raise DataError(name, str(error)) from error


def validate_item(item_dict: dict[str, Any]) -> None:
    """Validate a STAC item dict offline (see :func:`validate_stac`).

    Raises:
        DataError: naming the item and the first schema error.
    """
    if item_dict.get("type") != "Feature":
        raise DataError(
            f"STAC item {item_dict.get('id', '(no id)')}", f"type is {item_dict.get('type')!r}, not Feature"
        )
    validate_stac(item_dict)


def _first_error(error: pystac.STACValidationError) -> str:
    """The deepest failing spot of the document, and where it is.

    The extension schemas wrap items and collections in one ``oneOf``, whose own error says only that nothing
    matched and quotes the whole document; the leaf deepest in the document names the actual mistake.
    """
    errors = [leaf for each in error.source or [] for leaf in _leaf_errors(each)]
    if not errors:
        return str(error).splitlines()[-1][:MESSAGE_CHARS]
    deepest = max(errors, key=lambda e: len(e.absolute_path))  # max keeps the first of equals
    where = "/".join(str(part) for part in deepest.absolute_path) or "(top level)"
    return f"{deepest.message[:MESSAGE_CHARS]} at {where}"


def _leaf_errors(error: Any) -> Iterator[Any]:
    if error.context:
        for each in error.context:
            yield from _leaf_errors(each)
    else:
        yield error
