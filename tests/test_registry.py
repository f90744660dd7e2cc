"""The one list of events (EVENT_MODELS) and everything that must agree with it."""

from __future__ import annotations

import typing

import pytest

from carecycle_webhooks import (
    CallCompletedEvent,
    CustomerCreatedEvent,
    EventType,
    UnknownEvent,
    WebhookConfigurationError,
    testing,
)
from carecycle_webhooks._models import EVENT_MODELS, Event, KnownEvent, event_type_key
from carecycle_webhooks.schema import json_schema


def members(alias: object) -> list[object]:
    """The classes of an ``Annotated[A | B | ..., ...]`` union (each maybe ``Annotated`` too)."""
    union = typing.get_args(alias)[0]
    return [
        typing.get_args(one)[0] if typing.get_origin(one) is typing.Annotated else one
        for one in typing.get_args(union)
    ]


def test_the_registry_is_the_catalog_in_its_order() -> None:
    assert tuple(EVENT_MODELS) == tuple(member.value for member in EventType)
    for key, model in EVENT_MODELS.items():
        assert typing.get_args(model.model_fields["event_type"].annotation) == (key,)


def test_the_unions_that_type_checkers_need_hold_the_registry() -> None:
    assert members(KnownEvent) == list(EVENT_MODELS.values())
    assert members(Event) == [*EVENT_MODELS.values(), UnknownEvent]


def test_every_list_of_events_derives_from_the_registry() -> None:
    from carecycle_webhooks._cli import CATALOG  # a literal, so that --help needs no models

    assert tuple(EVENT_MODELS) == CATALOG
    assert set(json_schema()["discriminator"]["mapping"]) == set(EVENT_MODELS)
    for key, model in EVENT_MODELS.items():
        assert type(testing.make_event(key)) is model
        assert json_schema(key)["title"] == f"careCycle {key} event"


@pytest.mark.parametrize(
    ("given", "key"),
    [
        ("customer.created", "customer.created"),
        (EventType.CALL_COMPLETED, "call.completed"),
        (CustomerCreatedEvent, "customer.created"),
        (CallCompletedEvent, "call.completed"),
    ],
)
def test_event_type_key_reads_every_spelling(given: object, key: str) -> None:
    assert event_type_key(given, catalog_only=True) == key


def test_event_type_key_takes_other_strings_only_when_asked() -> None:
    assert event_type_key("appointment.booked", catalog_only=False) == "appointment.booked"
    for wrong in ("appointment.booked", "", 42, UnknownEvent):
        with pytest.raises(
            WebhookConfigurationError, match=r"customer\.created, customer\.updated, call\.completed"
        ):
            event_type_key(wrong, catalog_only=True)
    with pytest.raises(WebhookConfigurationError):
        event_type_key("", catalog_only=False)
