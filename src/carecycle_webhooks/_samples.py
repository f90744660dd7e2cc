"""The catalog's example payloads, for the demo, the CLI and the testing factories.

The tests keep their own copies as JSON fixtures and check that these match them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SAMPLE_PAYLOADS"]

# The catalog's customer object: the payload of the customer events, and call.completed's customer.
_CUSTOMER: dict[str, Any] = {
    "id": "b1f7c0e2-3a4d-4e5f-8a9b-0c1d2e3f4a5b",
    "createdAt": "2026-06-17T19:07:23.709Z",
    "updatedAt": "2026-06-17T19:07:23.709Z",
    "externalId": "CRM-48213",
    "status": "Lead",
    "firstName": "Marcus",
    "middleName": None,
    "lastName": "Delacroix",
    "salutation": None,
    "suffix": None,
    "preferredName": None,
    "phoneNumber": "+13128471928",
    "lineType": "mobile",
    "email": "marcus.delacroix@example.com",
    "dateOfBirth": "1958-04-12",
    "language": "en",
    "ethnicity": None,
    "gender": "Male",
    "maritalStatus": "Married",
    "address": "4427 Westbrook Ave",
    "address2": "Apt 3B",
    "city": "Mesa",
    "county": "Maricopa",
    "state": "AZ",
    "postalCode": "85204",
    "timezone": "America/Phoenix",
    "mbiNumber": "1EG4TE5MK73",
    "medicareCard": True,
    "medicarePartADate": "2023-05-01",
    "medicarePartBDate": "2023-05-01",
    "hasMedicaid": False,
    "medicaidNumber": None,
    "socialSecurityDisability": False,
    "veteran": True,
    "vaNumber": None,
    "householdIncome": 42000,
    "annualIncome": 42000,
    "filingStatus": "married_joint",
    "dependentCount": 0,
    "subsidyEligible": True,
    "subsidyAmount": 148,
    "carrierAssignedCustomerId": None,
    "agentName": None,
    "agentNpn": None,
    "assignedUser": {
        "id": "b396018f-7d49-4a55-abe5-544174abcaaa",
        "name": "Priya Raman",
        "email": "priya@youragency.com",
        "npn": "8419302",
        "role": "agent",
        "licensedStates": ["AZ", "AR"],
    },
    "doNotCall": False,
    "doNotSMS": False,
    "doNotEmail": False,
    "doNotMail": False,
    "testCustomer": False,
}

_CALL: dict[str, Any] = {
    "event_type": "call.completed",
    "id": "dca4a483-af54-4899-a804-766ee5812537",
    "createdAt": "2026-06-17T19:07:23.709Z",
    "phoneNumber": "+13128471928",
    "callSid": "f2a91c0b-7d2e-4c8a-9f31-6b5d0a4e1c77",
    "direction": "inbound",
    "disposition": "Enrolled",
    "durationMs": 247000,
    "startTime": "2026-06-17T19:03:16.001Z",
    "endTime": "2026-06-17T19:07:23.001Z",
    "endedReason": "completed",
    "summary": "Caller confirmed eligibility and enrolled in a Medicare Advantage plan effective July 1.",
    "transcript": "Agent: Thanks for calling careCycle...\nCaller: Hi, I'd like to review my options...",
    "campaign": {
        "id": "4f952597-5c04-4d2c-851e-30f518e2c761",
        "name": "MA Inbound Receptionist",
        "slug": None,
        "description": None,
        "status": "active",
        "vertical": "medicare",
        "suite": "receptionist",
        "direction": "inbound",
        "kind": "voice_ai",
        "tags": [],
        "startDate": "2026-03-06T00:11:35.256Z",
        "endDate": None,
    },
}

SAMPLE_PAYLOADS: dict[str, dict[str, Any]] = {
    "customer.created": {"event_type": "customer.created", **_CUSTOMER},
    # The catalog shows the changed fields; every other field is the customer's as before.
    "customer.updated": {
        "event_type": "customer.updated",
        **_CUSTOMER,
        "updatedAt": "2026-06-18T14:22:09.120Z",
        "status": "Active",
    },
    "call.completed": {**_CALL, "customer": _CUSTOMER},
}
