"""Validation errors of our models, without the input: it may be PHI.

pydantic's ``hide_input_in_errors`` only applies to ``str()`` of the outermost validator's
error; ``.errors()`` (which FastAPI returns in its 422 body) always holds the input. So the
models wrap their validation with `hide_input`, which raises the same errors (types,
locations, the context that describes the schema) with every input replaced by `HIDDEN`.
"""

from __future__ import annotations

import functools
import typing
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

if TYPE_CHECKING:
    from pydantic import ValidatorFunctionWrapHandler

__all__ = ["HIDDEN", "hide_input", "without_input"]

# What a validation error of our models shows in place of the input, in .errors() too.
HIDDEN = "<redacted>"
# Context entries that describe the schema, never the input: kept so that messages stay
# useful ("Input should be 'Lead', 'Active' or 'Inactive'"). Every other string in an
# error's context is hidden: a parser's message can quote the input ("found `n` at 1"),
# a discriminator error quotes the tag it was given.
_SCHEMA_CONTEXT = frozenset(
    {
        "class",
        "class_name",
        "discriminator",
        "expected",
        "expected_tags",
        "field_type",
        "pattern",
        "unit",
    }
)


@functools.cache
def _known_error_types() -> frozenset[str]:
    return frozenset(typing.get_args(core_schema.ErrorType))


def _custom_error(kind: str, message: str) -> PydanticCustomError:
    # Typed for literal strings, to keep values out of messages: these are pydantic's own.
    return PydanticCustomError(kind, message)  # pyright: ignore[reportArgumentType]


def without_input(error: ValidationError) -> ValidationError:
    """The same errors (types, locations, schema context), with every input value hidden.

    pydantic's ``hide_input_in_errors`` only applies to the outermost validator's
    ``str()``; ``.errors()``, which FastAPI returns in its 422 body, always holds the input.
    """
    details = error.errors(include_url=False)
    lines: list[InitErrorDetails] = []
    for detail in details:
        kind = detail["type"]
        context = {
            key: value
            if key in _SCHEMA_CONTEXT or (type(value) in (int, float) and key != "error")
            else HIDDEN
            for key, value in detail.get("ctx", {}).items()
        }
        line = InitErrorDetails(type=kind, loc=detail["loc"], input=HIDDEN)
        if kind not in _known_error_types():
            # Our own error types (missing_event_type) and any other custom one: its
            # message may quote its context, so it is kept only when there is none.
            message = HIDDEN if context else detail["msg"]
            line["type"] = _custom_error(kind, message)
        elif context:
            line["ctx"] = context
        lines.append(line)
    try:
        return ValidationError.from_exception_data(error.title, lines, hide_input=True)
    except (TypeError, ValueError, KeyError):
        # A known type whose context needs a value of another kind: type and location only.
        plain = [
            InitErrorDetails(
                type=_custom_error(detail["type"], HIDDEN),
                loc=detail["loc"],
                input=HIDDEN,
            )
            for detail in details
        ]
        return ValidationError.from_exception_data(error.title, plain, hide_input=True)


def hide_input(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:  # noqa: ANN401 - a wrap validator: any input, any output
    try:
        return handler(value)
    except ValidationError as error:
        hidden = without_input(error)
    # Raised outside the except block: the original error, with its input, rides nowhere.
    raise hidden
