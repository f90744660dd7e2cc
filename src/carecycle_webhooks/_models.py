"""Frozen pydantic models of the careCycle webhook event catalog.

Wire names (camelCase) are aliases; attributes are snake_case. Every field that is not
required by the catalog is ``X | None`` and reads as ``None`` when missing. Unknown enum
values are kept as their string, unknown fields stay reachable through ``model_extra``,
and unknown event types parse as `UnknownEvent`: nothing careCycle may add later makes a
signed event unparseable.

Fields holding protected health information are marked once, with `_PHI`, and are
shown as ``<redacted>`` by ``repr()``/``str()``; attribute access returns the real value.
"""

from __future__ import annotations

import datetime
import enum
import types
import uuid
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeAlias, TypeVar, cast

from pydantic import (
    AliasGenerator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    ModelWrapValidatorHandler,
    SerializerFunctionWrapHandler,
    Tag,
    ValidationError,
    WrapValidator,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import SchemaValidator, core_schema

from ._core_schemas import core_schema_of, without_wrappers
from ._redaction import HIDDEN, hide_input, without_input

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "EVENT_MODELS",
    "AssignedUser",
    "CallCompletedEvent",
    "CallDirection",
    "Campaign",
    "Customer",
    "CustomerCreatedEvent",
    "CustomerStatus",
    "CustomerUpdatedEvent",
    "Event",
    "EventType",
    "Gender",
    "LineType",
    "MaritalStatus",
    "UnknownEvent",
    "event_type_key",
    "not_in_catalog",
]


# --------------------------------------------------------------------------- enums


class _WireEnum(str, enum.Enum):
    """A ``str`` enum whose members are their wire strings, also under ``str()`` and ``format()``."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, format_spec: str) -> str:
        return format(str(self.value), format_spec)


class EventType(_WireEnum):
    """The event types careCycle delivers (also the Svix event type)."""

    CUSTOMER_CREATED = "customer.created"
    CUSTOMER_UPDATED = "customer.updated"
    CALL_COMPLETED = "call.completed"


class CustomerStatus(_WireEnum):
    """Lifecycle status of a customer."""

    LEAD = "Lead"
    ACTIVE = "Active"
    INACTIVE = "Inactive"


class LineType(_WireEnum):
    """Carrier line type of a customer's phone number."""

    LANDLINE = "landline"
    MOBILE = "mobile"
    FIXED_VOIP = "fixedVoip"
    NON_FIXED_VOIP = "nonFixedVoip"
    PERSONAL = "personal"
    TOLL_FREE = "tollFree"
    PREMIUM = "premium"
    SHARED_COST = "sharedCost"
    UAN = "uan"
    VOICEMAIL = "voicemail"
    PAGER = "pager"
    UNKNOWN = "unknown"


class Gender(_WireEnum):
    """Gender of a customer, as collected by the agency."""

    MALE = "Male"
    FEMALE = "Female"
    NON_BINARY = "Non-Binary"
    OTHER = "Other"
    PREFER_NOT_TO_SAY = "Prefer Not to Say"


class MaritalStatus(_WireEnum):
    """Marital status of a customer."""

    SINGLE = "Single"
    MARRIED = "Married"
    DIVORCED = "Divorced"
    WIDOWED = "Widowed"
    SEPARATED = "Separated"
    DOMESTIC_PARTNERSHIP = "Domestic Partnership"


class CallDirection(_WireEnum):
    """Direction of a call or of a campaign."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


_E = TypeVar("_E", bound=enum.Enum)

# An enum field that keeps values this version does not know as their plain string.
# The enum is tried first, so every documented value arrives as its member.
_OpenEnum: TypeAlias = Annotated[_E | str, Field(union_mode="left_to_right")]


# A list of strings. A list stops at its first invalid item (fail_fast): the error says
# what is wrong, and a million wrong items cost no more than one. (Annotated outside the
# "| None": an Annotated with FailFast() inside a union is not hashable on Python 3.10.)
_Strings: TypeAlias = Annotated[tuple[str, ...] | None, Field(fail_fast=True)]


class _PHIMark:
    """Marks a field as protected health information: redacted by repr(), flagged in the schema."""

    __slots__ = ()


# The one place a field is marked as protected health information. The mark lands in
# the JSON Schema as "x-phi" and drives repr() redaction.
_PHI_MARK = _PHIMark()
_PHI_KEY = "x-phi"

_T = TypeVar("_T")
_Phi: TypeAlias = Annotated[_T, Field(json_schema_extra={_PHI_KEY: True}), _PHI_MARK]

# Wire names that are not the plain camelCase of the attribute.
_WIRE_NAMES = {
    "event_type": "event_type",
    "do_not_sms": "doNotSMS",
}


def _wire_name(attribute: str) -> str:
    return _WIRE_NAMES.get(attribute) or to_camel(attribute)


class _Redacted:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<redacted>"


_REDACTED = _Redacted()


class _Model(BaseModel):
    """Shared configuration and PHI-safe repr of every careCycle model."""

    model_config: ClassVar[ConfigDict] = ConfigDict(
        frozen=True,
        extra="allow",
        # Validation errors never echo input values: they may be PHI.
        hide_input_in_errors=True,
        alias_generator=AliasGenerator(validation_alias=_wire_name, serialization_alias=_wire_name),
        validate_by_alias=True,
        validate_by_name=True,
        use_enum_values=False,
        ser_json_timedelta="iso8601",
        # Infinity and NaN in a payload survive a round trip instead of becoming null.
        ser_json_inf_nan="constants",
        # Field names repeat in every payload; values (names, ids, timestamps) rarely do:
        # caching them only churns pydantic's string cache. Measured under uvicorn:
        # about 1.5 % more requests per second than caching every string.
        cache_strings="keys",
        defer_build=True,
    )

    phi_fields: ClassVar[frozenset[str]] = frozenset()
    """Attribute names of the fields holding protected health information."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.phi_fields = frozenset(
            name
            for name, info in cls.model_fields.items()
            if any(mark is _PHI_MARK for mark in info.metadata)
        )

    if not TYPE_CHECKING:  # keep pydantic's frozen typing for checkers

        def __setattr__(self, name: str, value: Any) -> None:
            if name in type(self).__private_attributes__:  # a subclass's own, as pydantic allows
                super().__setattr__(name, value)
                return
            # pydantic's own frozen_instance error echoes the assigned value, which may be PHI.
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [{"type": "frozen_instance", "loc": (name,), "input": HIDDEN}],
                hide_input=True,
            )

        def __delattr__(self, name: str) -> None:
            if name in type(self).__private_attributes__:
                super().__delattr__(name)
                return
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [{"type": "frozen_instance", "loc": (name,), "input": None}],
                hide_input=True,
            )

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **options: Any) -> Self:
        """Validate JSON text; a syntax error hides the text too (pydantic's would hold it whole)."""
        try:
            return super().model_validate_json(json_data, **options)
        except ValidationError as error:
            hidden = without_input(error)
        raise hidden  # outside the except block: the original error rides nowhere

    @model_validator(mode="wrap")
    @classmethod
    def _hide_input_in_errors(cls, value: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        # Wherever a model of ours is validated (TypeAdapter(Event), a user's model or a
        # FastAPI body holding one), its errors carry no input value, .errors() included.
        # The parse path validates without these wrappers: see KNOWN_EVENT_VALIDATOR.
        return cast("Self", hide_input(value, handler))

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # PHI fields and unknown fields (which may be PHI) never reach repr()/str().
        known = type(self).model_fields
        for name, value in super().__repr_args__():
            if name in self.phi_fields or name not in known:
                yield name, _REDACTED
            else:
                yield name, value


# --------------------------------------------------------------------------- objects


class AssignedUser(_Model):
    """The careCycle member assigned to a customer."""

    id: uuid.UUID
    name: str | None = None
    email: _Phi[str | None] = None
    npn: str | None = None
    role: str | None = None
    licensed_states: _Strings = None


class Campaign(_Model):
    """The campaign a call belonged to."""

    id: uuid.UUID
    name: str | None = None
    slug: str | None = None
    description: str | None = None
    status: str | None = None
    vertical: str | None = None
    suite: str | None = None
    direction: _OpenEnum[CallDirection] | None = None
    kind: str | None = None
    tags: _Strings = None
    start_date: AwareDatetime | None = None
    end_date: AwareDatetime | None = None


class _CustomerFields(_Model):
    """Every field of the catalog's customer object but the timestamps."""

    id: uuid.UUID
    external_id: str | None = None
    status: _OpenEnum[CustomerStatus] | None = None
    carrier_assigned_customer_id: _Phi[str | None] = None
    test_customer: bool | None = None

    first_name: _Phi[str | None] = None
    middle_name: _Phi[str | None] = None
    last_name: _Phi[str | None] = None
    salutation: str | None = None
    suffix: str | None = None
    preferred_name: _Phi[str | None] = None
    phone_number: _Phi[str | None] = None
    line_type: _OpenEnum[LineType] | None = None
    email: _Phi[str | None] = None
    date_of_birth: _Phi[datetime.date | None] = None
    language: str | None = None
    ethnicity: _Phi[str | None] = None
    gender: _OpenEnum[Gender] | None = None
    marital_status: _OpenEnum[MaritalStatus] | None = None

    address: _Phi[str | None] = None
    address2: _Phi[str | None] = None
    city: _Phi[str | None] = None
    county: _Phi[str | None] = None
    state: str | None = None
    postal_code: _Phi[str | None] = None
    timezone: str | None = None

    mbi_number: _Phi[str | None] = None
    medicare_card: bool | None = None
    medicare_part_a_date: _Phi[datetime.date | None] = None
    medicare_part_b_date: _Phi[datetime.date | None] = None
    has_medicaid: bool | None = None
    medicaid_number: _Phi[str | None] = None
    social_security_disability: bool | None = None
    veteran: bool | None = None
    va_number: _Phi[str | None] = None

    household_income: _Phi[int | None] = None
    annual_income: _Phi[int | None] = None
    filing_status: str | None = None
    dependent_count: int | None = None
    subsidy_eligible: bool | None = None
    subsidy_amount: _Phi[int | None] = None

    agent_name: str | None = None
    agent_npn: str | None = None
    assigned_user: AssignedUser | None = None

    do_not_call: bool | None = None
    do_not_sms: bool | None = None
    do_not_email: bool | None = None
    do_not_mail: bool | None = None


class Customer(_CustomerFields):
    """A careCycle customer, as nested in `CallCompletedEvent.customer`.

    The same shape as the customer events, without ``event_type``; only ``id`` is required.
    """

    created_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None


# --------------------------------------------------------------------------- events


class CustomerCreatedEvent(_CustomerFields):
    """``customer.created``: a customer was created; the payload is the full customer."""

    event_type: Literal["customer.created"]
    created_at: AwareDatetime
    updated_at: AwareDatetime


class CustomerUpdatedEvent(_CustomerFields):
    """``customer.updated``: a customer was edited; the payload is the customer after the edit."""

    event_type: Literal["customer.updated"]
    created_at: AwareDatetime
    updated_at: AwareDatetime


class CallCompletedEvent(_Model):
    """``call.completed``: a call reached a terminal state (including no-answer, busy, failed)."""

    event_type: Literal["call.completed"]
    id: uuid.UUID
    created_at: AwareDatetime
    phone_number: _Phi[str | None] = None
    call_sid: str | None = None
    direction: _OpenEnum[CallDirection] | None = None
    disposition: str | None = None
    duration_ms: int | None = None
    start_time: AwareDatetime | None = None
    end_time: AwareDatetime | None = None
    ended_reason: str | None = None
    summary: _Phi[str | None] = None
    transcript: _Phi[str | None] = None
    campaign: Campaign | None = None
    customer: Customer | None = None


class UnknownEvent(_Model):
    """An event whose ``event_type`` this version of the library does not know.

    Its wire form is ``payload`` itself: ``model_dump()`` returns it, and validating a
    wire payload fills both attributes.

    Attributes:
        event_type: The event type as sent.
        payload: The whole JSON object, as a read-only mapping.
    """

    model_config: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    event_type: str
    payload: Mapping[str, Any]

    @model_validator(mode="before")
    @classmethod
    def _from_wire(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        fields = cast("Mapping[str, Any]", data)
        payload = fields.get("payload")
        if (
            set(fields) == {"event_type", "payload"}
            and isinstance(payload, Mapping)
            and cast("Mapping[str, Any]", payload).get("event_type") == fields["event_type"]
        ):
            return fields  # already in attribute form: UnknownEvent(event_type=..., payload=...)
        return {"event_type": fields.get("event_type"), "payload": fields}

    @field_validator("payload", mode="after")
    @classmethod
    def _read_only(cls, value: Mapping[str, Any]) -> Mapping[str, Any]:
        return types.MappingProxyType(dict(value))

    @field_serializer("payload")
    def _plain(self, value: Mapping[str, Any]) -> dict[str, Any]:
        return dict(value)

    @model_serializer(mode="wrap")
    def _to_wire(self, handler: SerializerFunctionWrapHandler) -> Any:
        dumped: dict[str, Any] = handler(self)
        return dumped["payload"]

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        yield "event_type", self.event_type
        yield "payload", _REDACTED


# --------------------------------------------------------------------------- the registry

EVENT_MODELS: Mapping[str, type[CustomerCreatedEvent | CustomerUpdatedEvent | CallCompletedEvent]] = (
    types.MappingProxyType(
        {
            EventType.CUSTOMER_CREATED.value: CustomerCreatedEvent,
            EventType.CUSTOMER_UPDATED.value: CustomerUpdatedEvent,
            EventType.CALL_COMPLETED.value: CallCompletedEvent,
        }
    )
)
"""The catalog: each event type and its model, in the catalog's order.

The one list of events: every other list (the schema's, the testing kit's, the
dispatcher's) derives from it. Adding an event takes its model, its `EventType` member and
a line here; type checkers also need it in the `Event` and `KnownEvent` unions below (a
test holds them to this).
"""

_EVENT_TYPE_OF_MODEL: Mapping[type, str] = {model: key for key, model in EVENT_MODELS.items()}


def event_type_key(event_type: object, *, catalog_only: bool, what: str = "event type") -> str:
    """The wire string of an event type given as a string, an `EventType` or an event model.

    Args:
        event_type: ``"customer.created"``, ``EventType.CUSTOMER_CREATED`` or ``CustomerCreatedEvent``.
        catalog_only: Refuse a string outside the catalog; otherwise any non-empty string
            is an event type (this version does not know every type careCycle may add).
        what: How the argument is called in the error message.

    Raises:
        WebhookConfigurationError: Not an event type (of the catalog, with ``catalog_only``).
    """
    if isinstance(event_type, EventType):
        return event_type.value
    if isinstance(event_type, str) and event_type and (not catalog_only or event_type in EVENT_MODELS):
        return event_type
    if isinstance(event_type, type) and event_type in _EVENT_TYPE_OF_MODEL:
        return _EVENT_TYPE_OF_MODEL[event_type]
    from ._errors import WebhookConfigurationError

    raise WebhookConfigurationError(not_in_catalog(event_type, what))


def not_in_catalog(event_type: object, what: str = "event type") -> str:
    """Says that ``event_type`` is not in the catalog, naming the closest event types."""
    from ._spelling import did_you_mean

    shown = repr(event_type) if isinstance(event_type, (str, type)) else type(event_type).__name__
    guess = did_you_mean(event_type, tuple(EVENT_MODELS)) if isinstance(event_type, str) else ""
    known = f"known: {', '.join(EVENT_MODELS)} (or their EventType members and models)"
    return f"no {what} {shown} in the careCycle catalog{guess}; {known}"


# --------------------------------------------------------------------------- the union


def _event_tag(value: Any) -> str | None:
    if isinstance(value, UnknownEvent):
        return "unknown"
    if isinstance(value, Mapping):
        event_type: object = cast("Mapping[str, Any]", value).get("event_type")
    else:
        event_type = getattr(value, "event_type", None)
    if not isinstance(event_type, str):
        return None
    return event_type if event_type in EVENT_MODELS else "unknown"


Event: TypeAlias = Annotated[
    (
        Annotated[CustomerCreatedEvent, Tag("customer.created")]
        | Annotated[CustomerUpdatedEvent, Tag("customer.updated")]
        | Annotated[CallCompletedEvent, Tag("call.completed")]
        | Annotated[UnknownEvent, Tag("unknown")]
    ),
    Discriminator(
        _event_tag,
        custom_error_type="missing_event_type",
        custom_error_message="event_type is missing or not a string",
    ),
    # The union's own errors (no event_type, an unknown tag) carry the whole payload as input.
    WrapValidator(hide_input),
]
"""Any careCycle event: a union discriminated on ``event_type``, with `UnknownEvent` for new types."""

# The parse path: the known events under a plain string discriminator, which pydantic-core
# resolves while reading the JSON. `Event`'s callable discriminator needs the whole body
# as a Python dict first, which costs as much again. Unknown types fall back to
# UnknownEvent, whose validator is only built when one arrives.
KnownEvent: TypeAlias = Annotated[
    CustomerCreatedEvent | CustomerUpdatedEvent | CallCompletedEvent,
    Field(discriminator="event_type"),
]
_PARSE_CONFIG = ConfigDict(hide_input_in_errors=True, cache_strings="keys")  # KNOWN_EVENT_VALIDATOR's


_HIDE_INPUT_FUNCTION = _Model.__dict__["_hide_input_in_errors"].__func__
# The parse path. It runs on every delivery, and a wrap validator per model would cost
# a Python call each and, on JSON input, the conversion of the payload to Python objects
# first (measured: twice the time for customer.created); it needs none, since
# parse_unverified_event keeps only locations and error types. Its validator is built
# from KnownEvent's schema with the models' wrappers taken out, and the same config.
KNOWN_EVENT_VALIDATOR = SchemaValidator(
    without_wrappers(core_schema_of(KnownEvent, _PARSE_CONFIG), _HIDE_INPUT_FUNCTION),
    core_schema.CoreConfig(hide_input_in_errors=True, cache_strings="keys"),
)
