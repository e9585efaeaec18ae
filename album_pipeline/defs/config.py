"""One home per setting: a Dagster ``Config`` takes its defaults from the core's frozen dataclasses.

The core dataclasses (``TrainingConfig``, ``CrawlOptions``, ``ExtractOptions``, ...) own every default and its
validation. A Config that exposes them in the launchpad subclasses :class:`CoreConfig`, names the dataclasses
it feeds in ``core_types``, and declares each field with :func:`core_field`, which copies the dataclass's
default (and its description, when the dataclass gives one in ``metadata={"doc": ...}``). The one conversion
from a Config to a core object is :meth:`CoreConfig.to_core`: the Config's fields that the dataclass has, plus
the values the stage sets itself (``fixed``).

Each Config writes its fields out, one ``name: type = core_field(Core, "name")`` line each, so that the
launchpad, pydantic and type checkers see every field with its type; these lines look alike from Config to
Config by design (``duplicates`` pairs them by shape), and the test keeps them in step with the core.

A stage that deliberately differs from the core default (finetuning runs fewer steps than pretraining) passes
``override=`` to :func:`core_field` and records its reason in ``stage_overrides``; the tests in
``album_pipeline_tests/defs/test_config.py`` hold every Config to this.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, ClassVar, TypeVar

import dagster as dg
from pydantic import Field, ValidationError, model_validator

T = TypeVar("T")


def core_default(core_type: type, name: str) -> Any:
    """The default of field ``name`` of the dataclass ``core_type`` (a fresh copy for factory defaults)."""
    field = _core_fields(core_type).get(name)
    if field is None:
        raise AttributeError(f"{core_type.__name__} has no field {name!r}")
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise ValueError(f"{core_type.__name__}.{name} has no default; the Config must require it")


def core_doc(core_type: type, name: str) -> str | None:
    field = _core_fields(core_type).get(name)
    return None if field is None else field.metadata.get("doc")


def core_field(
    core_type: type,
    name: str,
    description: str | None = None,
    *,
    override: Any = dataclasses.MISSING,
) -> Any:
    """A pydantic field whose default is ``core_type``'s default for ``name``, or ``override`` for a stage
    that deliberately differs (list the reason in the Config's ``stage_overrides``)."""
    default = core_default(core_type, name) if override is dataclasses.MISSING else override
    if isinstance(default, tuple):  # Dagster config has lists, not tuples; to_core converts back
        default = list(default)
    return Field(default, description=description or core_doc(core_type, name))


class CoreConfig(dg.Config):
    """A Config whose fields mirror core dataclasses (see the module docstring)."""

    # The core dataclasses this Config's fields feed.
    core_types: ClassVar[tuple[type, ...]] = ()
    # Core fields the stage sets itself rather than exposing them (say why beside each).
    fixed_core_fields: ClassVar[frozenset[str]] = frozenset()
    # Fields whose default deliberately differs from the core's, with the reason.
    stage_overrides: ClassVar[dict[str, str]] = {}

    @model_validator(mode="after")
    def _checked_by_the_core(self) -> CoreConfig:
        """Build each core object once, so that a bad value fails when the run config is read, with the
        core's own message, not when the asset reaches it. Fixed fields take their core defaults here; a core
        type with a fixed field that has no default is left to the asset."""
        for core_type in self.core_types:
            fields = _core_fields(core_type)
            if all(_has_default(fields[name]) for name in self.fixed_core_fields if name in fields):
                self.to_core(core_type)
        return self

    def to_core(self, core_type: type[T], **fixed: Any) -> T:
        """``core_type`` built from this Config's fields that it has, plus ``fixed`` (which win)."""
        if core_type not in self.core_types:
            raise TypeError(f"{type(self).__name__} does not feed {core_type.__name__}")
        fields = _core_fields(core_type)
        values: dict[str, Any] = {}
        for name, field in fields.items():
            if name in fixed or name not in type(self).model_fields:
                continue
            value = getattr(self, name)
            if isinstance(value, list) and _is_tuple_field(field):
                value = tuple(value)
            values[name] = value
        return core_type(**values, **fixed)


def _core_fields(core_type: type) -> dict[str, dataclasses.Field]:
    if not dataclasses.is_dataclass(core_type):
        raise TypeError(f"{core_type!r} is not a dataclass")
    return {field.name: field for field in dataclasses.fields(core_type) if field.init}


def _has_default(field: dataclasses.Field) -> bool:
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def _is_tuple_field(field: dataclasses.Field) -> bool:
    default = field.default
    if default is not dataclasses.MISSING:
        return isinstance(default, tuple)
    annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    return str(annotation).startswith("tuple")


def asset_config_classes(job_def: dg.JobDefinition) -> dict[str, type[dg.Config]]:
    """The Config class each op (one per asset) of ``job_def`` takes, by op name."""
    classes = {}
    for node in job_def.graph.node_defs:
        compute = getattr(node, "compute_fn", None)
        if compute is None or not getattr(compute, "has_config_arg", lambda: False)():
            continue
        annotation = compute.get_config_arg().annotation
        if isinstance(annotation, type) and issubclass(annotation, dg.Config):
            classes[node.name] = annotation
    return classes


def run_config_problems(job_def: dg.JobDefinition, run_config: dict) -> list[str]:
    """One sentence per problem of ``run_config``'s asset settings, naming ``asset.field`` and what is allowed.

    Each asset's Config is built as the run would build it (a CoreConfig through its core dataclasses), so a
    value the run would refuse after starting is refused before anything runs.
    """
    classes = asset_config_classes(job_def)
    problems = []
    for asset, entry in (run_config.get("ops") or {}).items():
        if asset not in classes:
            problems.append(f"`{asset}` is not an asset with settings; {_choices(asset, sorted(classes))}")
            continue
        values = (entry.get("config") or {}) if isinstance(entry, dict) else {}
        fields = sorted(classes[asset].model_fields)
        unknown = [name for name in values if name not in classes[asset].model_fields]
        problems += [f"`{asset}.{name}` is not a setting; {_choices(name, fields)}" for name in unknown]
        if unknown:
            continue
        try:
            classes[asset](**values)
        except ValidationError as error:
            problems += [_sentence(asset, detail) for detail in error.errors()]
    return problems


def _choices(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    if close:
        return "did you mean " + " or ".join(f"`{choice}`" for choice in close) + "?"
    shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
    return f"choose one of {shown}."


def _sentence(asset: str, detail: dict) -> str:
    where = ".".join([asset, *(str(part) for part in detail.get("loc", ()))])
    message = str(detail.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"`{where}`: {message}."
