"""One options model per stage, and the faces derived from it: CLI options, pipeline parameters, their checks.

Each stage's pydantic model (``MapOptions``, ``ChipOptions``, ``TrainConfig``, ``GateConfig``,
``Thresholds``) holds every option's default, range, description and cross-field rules once. The CLI
builds its ``--flags`` from those fields (:func:`click_option`), the Kubeflow pipelines declare their
parameters with them (:func:`field_like`), and every face checks values by building the model
(:func:`build`), so a limit changed in the model changes everywhere and a bad value is refused with the
same words on every face, naming the option (exit 2).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import annotated_types
import click
from pydantic import BaseModel, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from cloudlulc.errors import UsageError

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
M = TypeVar("M", bound=BaseModel)


def flag_of(name: str) -> str:
    """The CLI flag of a model field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def field_like(model: type[BaseModel], name: str, **changes: Any) -> Any:
    """A field for another model with ``model``'s default, range and description.

    The pipeline parameter models declare their fields this way, so a Kubeflow parameter and the
    library option it feeds cannot drift apart. ``changes`` set another default or description, or add
    bounds (``le=1000``) on top of the library's: a face may narrow a range, never widen it.
    """
    bounds = {key: changes.pop(key) for key in ("ge", "gt", "le", "lt") if key in changes}
    return FieldInfo.merge_field_infos(model.model_fields[name], Field(**bounds), **changes)


def _bounds(info: FieldInfo) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            bounds["min"] = item.ge
        elif isinstance(item, annotated_types.Gt):
            bounds.update(min=item.gt, min_open=True)
        elif isinstance(item, annotated_types.Le):
            bounds["max"] = item.le
        elif isinstance(item, annotated_types.Lt):
            bounds.update(max=item.lt, max_open=True)
    return bounds


def _click_type(annotation: Any, info: FieldInfo) -> Any:
    """The click type of a field: a Choice for a Literal, a range for a bounded number, else the type itself."""
    if get_origin(annotation) in (Union, types.UnionType):  # Optional[X]: the option may be left out
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    if get_origin(annotation) is Literal:
        return click.Choice([str(value) for value in get_args(annotation)])
    if annotation is date:
        return click.DateTime(["%Y-%m-%d"])
    bounds = _bounds(info)
    if annotation is int:
        return click.IntRange(**bounds) if bounds else int
    if annotation is float:
        return click.FloatRange(**bounds) if bounds else float
    return annotation


def click_option(model: type[BaseModel], name: str, *flags: str, **extra: Any) -> Decorator:
    """A click option for field ``name`` of ``model``: default, type, range and help from the field.

    Args:
        model: the stage's options model.
        name: the field; also the callback's parameter name.
        flags: the option's flags (default ``--field-name``; a boolean gets ``--x/--no-x``).
        extra: click keyword arguments that override the derived ones (``envvar``, a shorter help).
    """
    info = model.model_fields[name]
    default = None if info.default is PydanticUndefined else info.default
    if not flags:
        flags = (f"{flag_of(name)}/--no-{name.replace('_', '-')}",) if info.annotation is bool else (flag_of(name),)
    settings: dict[str, Any] = {"show_default": default is not None, "help": info.description}
    if info.is_required():  # no default at all: click 8.3+ takes an explicit None as one
        settings["required"] = True
    else:
        settings["default"] = default
    if info.annotation is not bool:
        settings["type"] = _click_type(info.annotation, info)
    return click.option(*flags, name, **(settings | extra))


def field_help(info: FieldInfo) -> str:
    """The field's description with its range (``Training epochs. Range: >= 1, <= 1000.``), for UIs that show text."""
    limits = [f"{sign} {getattr(item, attr)}" for item in info.metadata for attr, sign in _SIGNS if hasattr(item, attr)]
    text = (info.description or "").strip()
    return f"{text} Range: {', '.join(limits)}." if limits else text


_SIGNS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("multiple_of", "multiple of"))


def describe(error: ValidationError, flags: Mapping[str, str] | None = None) -> str:
    """One line naming each bad option (``--tile 80: Input should be a multiple of 32``) and what it must be."""
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "not an option of this stage"
        if not field:
            problems.append(message)
            continue
        name = (flags or {}).get(field, flag_of(field))
        value = item.get("input")
        shown = f" {value}" if isinstance(value, int | float | str) and item["type"] != "extra_forbidden" else ""
        problems.append(f"{name}{shown}: {message}")
    return "; ".join(problems)


def build(model: type[M], flags: Mapping[str, str] | None = None, **values: Any) -> M:
    """``model`` from ``values``, or a UsageError (exit 2) naming each bad option by its flag.

    Args:
        model: the stage's options model.
        flags: field -> flag where the face spells an option otherwise than ``--field-name``.
        values: the options as the face received them.
    """
    try:
        return model(**values)
    except ValidationError as error:
        raise UsageError(describe(error, flags)) from None
