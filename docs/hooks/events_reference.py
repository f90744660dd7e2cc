"""MkDocs hook: renders the events reference from the pydantic models at build time.

``docs/events.md`` holds the prose and one ``<!-- events-reference -->`` marker; this hook
replaces the marker with a section per event, object and enum, built from each model's
``model_fields`` (wire name, attribute, type, required, the ``x-phi`` mark) and each enum's
members. The catalog's descriptions are added by wire name; a description whose field no
longer exists, or a field without a catalog group, fails the build, so the page cannot
drift from the code.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from typing import TYPE_CHECKING

import pydantic
from mkdocs.exceptions import PluginError

import carecycle_webhooks as cw
from carecycle_webhooks._samples import SAMPLE_PAYLOADS  # the catalog's example payloads

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files
    from mkdocs.structure.pages import Page

__all__ = ["on_page_markdown", "render"]

MARKER = "<!-- events-reference -->"

# Each documented class and the anchor of its section on the page.
EVENTS: tuple[tuple[str, type[pydantic.BaseModel]], ...] = (
    ("customer.created", cw.CustomerCreatedEvent),
    ("customer.updated", cw.CustomerUpdatedEvent),
    ("call.completed", cw.CallCompletedEvent),
)
OBJECTS: tuple[type[pydantic.BaseModel], ...] = (cw.Customer, cw.AssignedUser, cw.Campaign)
ENUMS: tuple[type[enum.Enum], ...] = (
    cw.EventType,
    cw.CustomerStatus,
    cw.LineType,
    cw.Gender,
    cw.MaritalStatus,
    cw.CallDirection,
)

# The models of the catalog's customer object, whose fields are shown in the catalog's groups.
CUSTOMER_MODELS = frozenset({cw.CustomerCreatedEvent, cw.CustomerUpdatedEvent, cw.Customer})

# The catalog's groups of customer fields, by wire name, in the catalog's order.
CUSTOMER_GROUPS: dict[str, tuple[str, ...]] = {
    "Identifiers and status": (
        "event_type",
        "id",
        "createdAt",
        "updatedAt",
        "externalId",
        "status",
        "carrierAssignedCustomerId",
        "testCustomer",
    ),
    "Identity and contact": (
        "firstName",
        "middleName",
        "lastName",
        "salutation",
        "suffix",
        "preferredName",
        "phoneNumber",
        "lineType",
        "email",
        "dateOfBirth",
        "language",
        "ethnicity",
        "gender",
        "maritalStatus",
    ),
    "Address": ("address", "address2", "city", "county", "state", "postalCode", "timezone"),
    "Medicare and Medicaid": (
        "mbiNumber",
        "medicareCard",
        "medicarePartADate",
        "medicarePartBDate",
        "hasMedicaid",
        "medicaidNumber",
        "socialSecurityDisability",
        "veteran",
        "vaNumber",
    ),
    "Financial and subsidy": (
        "householdIncome",
        "annualIncome",
        "filingStatus",
        "dependentCount",
        "subsidyEligible",
        "subsidyAmount",
    ),
    "Assignment": ("agentName", "agentNpn", "assignedUser"),
    "Consent flags": ("doNotCall", "doNotSMS", "doNotEmail", "doNotMail"),
}

_CONSENT = "Per-channel contact suppression: respect it before reaching out."

# The catalog's descriptions, by wire name.
CUSTOMER_DESCRIPTIONS: dict[str, str] = {
    "event_type": "The webhook event. Switch on it to route the event.",
    "id": "careCycle customer ID.",
    "createdAt": "When the record was created.",
    "updatedAt": "When the record was last updated; changes on every update.",
    "externalId": "Your own identifier for the customer, if one was provided.",
    "status": "Lifecycle status.",
    "carrierAssignedCustomerId": "The carrier's identifier for the customer, if known.",
    "testCustomer": "`true` for test records: filter these out in production.",
    "firstName": "Legal name part.",
    "middleName": "Legal name part.",
    "lastName": "Legal name part.",
    "salutation": "Optional name extra.",
    "suffix": "Optional name extra.",
    "preferredName": "Optional name extra.",
    "phoneNumber": "Primary phone number (E.164).",
    "lineType": "Carrier line type.",
    "email": "Email address.",
    "dateOfBirth": "`YYYY-MM-DD`: a date, not a timestamp.",
    "language": "ISO 639-1 language code (`en`, `es`).",
    "ethnicity": "Free-text ethnicity, if collected.",
    "gender": "Gender, as collected by the agency.",
    "maritalStatus": "Marital status.",
    "address": "Street address, first line.",
    "address2": "Street address, second line.",
    "city": "City.",
    "county": "County.",
    "state": "Two-letter US state abbreviation.",
    "postalCode": "Postal code.",
    "timezone": "IANA time zone (`America/Phoenix`).",
    "mbiNumber": "Medicare Beneficiary Identifier.",
    "medicareCard": "Whether the customer has their Medicare card.",
    "medicarePartADate": "Medicare Part A effective date (`YYYY-MM-DD`).",
    "medicarePartBDate": "Medicare Part B effective date (`YYYY-MM-DD`).",
    "hasMedicaid": "Whether the customer has Medicaid.",
    "medicaidNumber": "Medicaid ID, if applicable.",
    "socialSecurityDisability": "Receiving SSDI.",
    "veteran": "Veteran status.",
    "vaNumber": "VA identifier, if applicable.",
    "householdIncome": "Whole US dollars (no cents).",
    "annualIncome": "Whole US dollars (no cents).",
    "filingStatus": "Tax filing status (`single`, `married_joint`, `head_of_household`, ...).",
    "dependentCount": "Number of dependents.",
    "subsidyEligible": "Eligible for a premium subsidy.",
    "subsidyAmount": "Estimated monthly subsidy, in whole US dollars.",
    "agentName": "Externally supplied agent name, if provided.",
    "agentNpn": "Externally supplied agent NPN, if provided.",
    "assignedUser": "The careCycle member assigned to the customer; `null` if unassigned.",
    "doNotCall": _CONSENT,
    "doNotSMS": _CONSENT,
    "doNotEmail": _CONSENT,
    "doNotMail": _CONSENT,
}

DESCRIPTIONS: dict[type[pydantic.BaseModel], dict[str, str]] = {
    cw.CustomerCreatedEvent: CUSTOMER_DESCRIPTIONS,
    cw.CustomerUpdatedEvent: CUSTOMER_DESCRIPTIONS,
    cw.Customer: {key: text for key, text in CUSTOMER_DESCRIPTIONS.items() if key != "event_type"},
    cw.CallCompletedEvent: {
        "event_type": "The webhook event: always `call.completed`.",
        "id": "careCycle call ID.",
        "phoneNumber": "The customer's phone number (E.164).",
        "direction": "Inbound or outbound.",
        "disposition": "Final outcome of the call.",
        "durationMs": "Call duration in milliseconds.",
        "endedReason": "Why the call ended (`completed`, `no-answer`, ...).",
        "summary": "AI-generated summary of the call.",
        "transcript": "Full call transcript.",
        "campaign": "The campaign the call belonged to; `null` if none.",
        "customer": "The associated customer; `null` if the call was not linked to one.",
    },
    cw.AssignedUser: {"licensedStates": "Two-letter US state codes."},
    cw.Campaign: {"direction": "Inbound or outbound."},
}

# Event descriptions, from the catalog.
EVENT_DESCRIPTIONS: dict[str, str] = {
    "customer.created": (
        "A customer is created (manual entry, inbound call, lead capture, or an integration). "
        "Bulk CSV imports do not emit this event. The payload is the full customer object."
    ),
    "customer.updated": (
        "A customer's details are edited. The payload has the shape of `customer.created` and "
        "reflects the customer's state after the update; `updatedAt` changes on every update."
    ),
    "call.completed": (
        "A call finishes and its details (transcript, duration, disposition) are finalized. It "
        "fires for every terminal call, including no-answer, busy and failed: use `disposition` "
        "and `endedReason` to tell outcomes apart."
    ),
}

_NAMED_TYPES: dict[object, str] = {str: "str", int: "int", bool: "bool", typing.Any: "Any"}


def anchor(cls: type) -> str:
    """The section anchor of a documented class."""
    return cls.__name__.lower()


def _atoms(annotation: object) -> list[str]:
    """The alternatives of a field's type, rendered, ``None`` last."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _atoms(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        atoms = [atom for arg in typing.get_args(annotation) for atom in _atoms(arg)]
        return [atom for atom in atoms if atom != "`None`"] + (["`None`"] if "`None`" in atoms else [])
    if origin is typing.Literal:
        return [" \\| ".join(f"`{json.dumps(value)}`" for value in typing.get_args(annotation))]
    if origin is not None:
        return [f"`{_plain(annotation)}`"]
    if annotation is type(None):
        return ["`None`"]
    if isinstance(annotation, type) and (annotation in ENUMS or annotation in OBJECTS):
        return [f"[`{annotation.__name__}`](#{anchor(annotation)})"]
    return [f"`{_plain(annotation)}`"]


def type_cell(annotation: object) -> str:
    """A field's type for a table cell: each alternative in code, documented classes linked."""
    return " \\| ".join(_atoms(annotation))


def _plain(annotation: object) -> str:
    """A type as it reads in Python, without links (for generic types)."""
    if annotation in _NAMED_TYPES:
        return _NAMED_TYPES[annotation]
    origin = typing.get_origin(annotation)
    if origin is not None:
        args = ", ".join("..." if arg is Ellipsis else _plain(arg) for arg in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if isinstance(annotation, type):
        if issubclass(annotation, pydantic.AwareDatetime):
            return "datetime"
        return annotation.__name__
    return str(annotation)


def _fail(message: str) -> PluginError:
    return PluginError(f"events reference: {message}")


def wire_name(name: str, info: pydantic.fields.FieldInfo) -> str:
    """The field's name in the JSON payload."""
    alias = info.validation_alias
    if not isinstance(alias, str):
        raise _fail(f"field {name} has no single wire name")
    return alias


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def field_table(model: type[pydantic.BaseModel], groups: dict[str, tuple[str, ...]] | None = None) -> str:
    """One row per field of ``model``; with ``groups``, in the catalog's groups and order."""
    descriptions = DESCRIPTIONS.get(model, {})
    fields = {wire_name(name, info): (name, info) for name, info in model.model_fields.items()}
    stale = set(descriptions) - set(fields)
    if stale:
        raise _fail(f"{model.__name__} has no field {', '.join(sorted(stale))}")
    rows = [
        # The wire name, and under it the attribute: one column, so that neither is broken mid-name.
        "| Wire name<br>attribute | Type | Required | PHI | Description |",
        "|---|---|---|---|---|",
    ]

    def row(wire: str) -> str:
        name, info = fields[wire]
        kind = type_cell(info.annotation)
        required = "yes" if info.is_required() else "no"
        # The page's legend says so: a field that may be missing reads as None.
        if not info.is_required() and (info.default is not None or not kind.endswith("`None`")):
            raise _fail(f"{model.__name__}.{name} is optional but does not default to None")
        phi = "**PHI**" if is_phi(model, name, info) else ""
        field = f"`{wire}`<br>`{name}`" if name != wire else f"`{wire}`"
        return f"| {field} | {kind} | {required} | {phi} | {_cell(descriptions.get(wire, ''))} |"

    if groups is None:
        rows.extend(row(wire) for wire in fields)
        return "\n".join(rows)
    grouped = [wire for members in groups.values() for wire in members]
    ungrouped = [wire for wire in fields if wire not in grouped]
    if ungrouped:
        raise _fail(f"{model.__name__}.{', '.join(ungrouped)} belongs to no catalog group")
    for title, members in groups.items():
        present = [wire for wire in members if wire in fields]
        if present:
            rows.append(f"| **{title}** | | | | |")
            rows.extend(row(wire) for wire in present)
    return "\n".join(rows)


def is_phi(model: type[pydantic.BaseModel], name: str, info: pydantic.fields.FieldInfo) -> bool:
    """Whether a field is marked as PHI: its ``x-phi`` schema mark, checked against ``phi_fields``."""
    extra = info.json_schema_extra
    marked = isinstance(extra, dict) and extra.get("x-phi") is True
    listed: object = getattr(model, "phi_fields", None)
    if not isinstance(listed, frozenset) or marked != (name in listed):
        raise _fail(f"{model.__name__}.{name}: its x-phi mark and {model.__name__}.phi_fields disagree")
    return marked


def _shape(model: type[pydantic.BaseModel]) -> list[tuple[str, str, object, bool, bool]]:
    """What the field table shows of each field, ``event_type`` aside."""
    return [
        (name, wire_name(name, info), info.annotation, info.is_required(), is_phi(model, name, info))
        for name, info in model.model_fields.items()
        if name != "event_type"
    ]


def example(event_type: str, model: type[pydantic.BaseModel]) -> str:
    """The catalog's example payload, checked to parse into ``model``."""
    payload = SAMPLE_PAYLOADS[event_type]
    text = json.dumps(payload, indent=2, ensure_ascii=False)
    if not isinstance(cw.parse_unverified_event(text), model):
        raise _fail(f"the {event_type} example does not parse into {model.__name__}")
    body = "\n".join(f"    {line}" for line in ["```json", *text.splitlines(), "```"])
    return f'??? example "Example payload (from the catalog)"\n\n{body}'


def event_section(
    event_type: str, model: type[pydantic.BaseModel], previous: list[tuple[str, type[pydantic.BaseModel]]]
) -> str:
    """The section of one event: description, fields (or the earlier event they equal), example."""
    lines = [
        f"### `{event_type}` {{ #{event_type.replace('.', '-')} }}",
        "",
        EVENT_DESCRIPTIONS[event_type],
        "",
        f"Parsed into [`{model.__name__}`][carecycle_webhooks.{model.__name__}].",
        "",
    ]
    same_as = next((earlier for earlier, other in previous if _shape(other) == _shape(model)), None)
    if same_as is not None:
        lines.append(
            f"Every field is the same as in [`{same_as}`](#{same_as.replace('.', '-')}), "
            f'except `event_type`, which is `"{event_type}"`.'
        )
    else:
        lines.append(field_table(model, CUSTOMER_GROUPS if model in CUSTOMER_MODELS else None))
    lines += ["", example(event_type, model), ""]
    return "\n".join(lines)


def object_section(model: type[pydantic.BaseModel]) -> str:
    """The section of one nested object."""
    groups = CUSTOMER_GROUPS if model in CUSTOMER_MODELS else None
    summary = (model.__doc__ or "").strip().splitlines()[0]
    return "\n".join(
        [
            f"### `{model.__name__}` {{ #{anchor(model)} }}",
            "",
            f"{summary} See [`{model.__name__}`][carecycle_webhooks.{model.__name__}] in the API reference.",
            "",
            field_table(model, groups),
            "",
        ]
    )


def enum_section(cls: type[enum.Enum]) -> str:
    """The section of one enum: its members and their wire values."""
    summary = (cls.__doc__ or "").strip().splitlines()[0]
    rows = [f"| `{cls.__name__}.{member.name}` | `{json.dumps(member.value)}` |" for member in cls]
    return "\n".join(
        [
            f"### `{cls.__name__}` {{ #{anchor(cls)} }}",
            "",
            f"{summary} See [`{cls.__name__}`][carecycle_webhooks.{cls.__name__}] in the API reference.",
            "",
            "| Member | Wire value |",
            "|---|---|",
            *rows,
            "",
        ]
    )


def unknown_section() -> str:
    """The section of `UnknownEvent`."""
    model = cw.UnknownEvent
    rows = [f"| `{name}` | {type_cell(info.annotation)} |" for name, info in model.model_fields.items()]
    return "\n".join(
        [
            "### Any other `event_type` { #unknown-event }",
            "",
            (
                "[`UnknownEvent`][carecycle_webhooks.UnknownEvent]: an event whose `event_type` "
                "this version does not know. Its attributes:"
            ),
            "",
            "| Attribute | Type |",
            "|---|---|",
            *rows,
            "",
        ]
    )


def render() -> str:
    """The whole generated part of the page."""
    parts = ["## Events", ""]
    parts += [
        event_section(event_type, model, list(EVENTS[:number]))
        for number, (event_type, model) in enumerate(EVENTS)
    ]
    parts += [unknown_section(), "## Objects", ""]
    parts += [object_section(model) for model in OBJECTS]
    parts += ["## Enums", ""]
    parts += [enum_section(cls) for cls in ENUMS]
    documented = {model for _, model in EVENTS} | set(OBJECTS) | set(ENUMS) | {cw.UnknownEvent}
    exported = {
        value
        for name in cw.__all__
        if isinstance(value := getattr(cw, name), type)
        and (issubclass(value, pydantic.BaseModel) or issubclass(value, enum.Enum))
    }
    if exported - documented:
        missing = ", ".join(sorted(cls.__name__ for cls in exported - documented))
        raise _fail(f"exported but not documented: {missing}")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:  # noqa: ARG001 - MkDocs passes them by name
    """Replace the marker with the generated reference."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())
