"""pydantic core schemas for the parse path: built without a validator, and stripped of wrappers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from pydantic import TypeAdapter

if TYPE_CHECKING:
    from pydantic import ConfigDict
    from pydantic_core import CoreSchema

__all__ = ["core_schema_of", "without_wrappers"]


def core_schema_of(annotation: Any, config: ConfigDict) -> CoreSchema:  # noqa: ANN401 - any type form
    """The core schema of ``annotation``, without a validator built for it.

    ``TypeAdapter(annotation, config=config).core_schema`` is the same schema, but the
    adapter also builds a validator and a serializer, and the validator loads pydantic's
    plugins: importlib.metadata (which imports email and socket) and a scan of every
    installed distribution's entry points. At a cold start (AWS Lambda) that was about a
    third of the parse path's import, for a validator that the parse path does not use.
    So the schema comes from pydantic's schema generator, a private interface; should a
    pydantic release change it, a TypeAdapter gives the same schema again, only slower
    (tests/test_models.py holds the two equal).
    """
    try:
        from pydantic._internal._config import ConfigWrapper
        from pydantic._internal._generate_schema import GenerateSchema

        generator = GenerateSchema(ConfigWrapper(config))
        return generator.clean_schema(generator.generate_schema(annotation))
    except (ImportError, AttributeError, TypeError):
        return TypeAdapter[Any](annotation, config=config).core_schema


def without_wrappers(schema: CoreSchema, function: object) -> CoreSchema:
    """A copy of a core schema without its wrap validators that call ``function``.

    Args:
        schema: A core schema.
        function: The plain function of a model's ``mode="wrap"`` model validator (a
            classmethod's ``__func__``): each validator that calls it is replaced by the
            schema it wraps.
    """
    return cast("CoreSchema", _strip(schema, function))


def _strip(schema: object, function: object) -> object:
    if isinstance(schema, list):
        return [_strip(item, function) for item in cast("list[object]", schema)]
    if not isinstance(schema, dict):
        return schema
    node = cast("dict[str, Any]", schema)
    called: object = node.get("function")
    if (
        node.get("type") == "function-wrap"
        and isinstance(called, dict)
        and getattr(cast("dict[str, Any]", called).get("function"), "__func__", None) is function
    ):
        inner = cast("dict[str, Any]", _strip(node["schema"], function))
        if "ref" in node:  # pydantic moves the model's ref onto its outermost validator
            inner["ref"] = node["ref"]
        return inner
    return {key: _strip(value, function) for key, value in node.items()}
