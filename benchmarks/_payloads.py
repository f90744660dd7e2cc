"""Shared helpers for the benchmark scripts: secrets, payloads and svix-signed headers.

Everything here is deterministic (fixed seeds) so that runs are comparable. Bodies are
built the way careCycle sends them: compact JSON, UTF-8, non-ASCII kept as UTF-8 (not
``\\u`` escapes), quotes and newlines escaped by JSON.
"""

from __future__ import annotations

import base64
import datetime
import json
import random
import statistics
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"

SECRET = "whsec_" + base64.b64encode(b"carecycle-webhooks-bench-secret-01").decode()
MSG_ID = "msg_2Lm1bFf5ZsqHw5e2yd0DgPzm5Tx"

_AGENT_LINES = (
    "Thanks for calling careCycle, this is Dana. Who do I have the pleasure of speaking with?",
    "Can you confirm your date of birth and the ZIP code on file for me?",
    'Okay, so when you say "extra help", do you mean the Part D Low-Income Subsidy?',
    "I see a Medicare Advantage plan with a $0 premium and a $3,400 maximum out-of-pocket.",
    "Let me check whether Dr. Müller at St. Mary's is in network for that plan.",
    "Your Part B effective date shows as the first of the month, is that right?",
    "I'm going to read a short disclaimer now; please stop me if anything is unclear.",
    'The plan\'s formulary lists "Eliquis" as a tier 3 drug, with a $47 copay.',
    "Would you like me to send the summary of benefits to the email we have on file?",
    "Great, I have José listed as your authorised representative, is that still correct?",
)
_CALLER_LINES = (
    "Hi, I'd like to review my options, I just turned sixty-five last month.",
    "It's José Hernández, H-E-R-N-Á-N-D-E-Z.",
    'My daughter said I should ask about the "give back" plans, whatever those are.',
    "I take about six prescriptions, mostly for blood pressure and my heart.",
    "Yes, April twelfth, 1958, and the ZIP is 60614.",
    "No, I don't have Medicaid, but I do have VA coverage from when I served.",
    "Can you say that again? The line cut out for a second.",
    "Okay... that sounds fine. What about dental? My crown cost me a fortune.",
    'She told me, "Mom, don\'t sign anything on the phone", so I want it in writing.',
    "Sure, that email is fine. Gracias, you've been very patient with me.",
)


def fixture_text(event_type: str) -> str:
    """The fixture file as stored (pretty-printed JSON)."""
    return (FIXTURES / f"{event_type}.json").read_text(encoding="utf-8")


def make_transcript(target_chars: int, *, seed: int = 1958) -> str:
    """A multi-line ``Agent: ...`` / ``Caller: ...`` transcript of about ``target_chars`` characters."""
    rng = random.Random(seed)
    lines: list[str] = []
    size = 0
    turn = 0
    while size < target_chars:
        speaker, pool = ("Agent", _AGENT_LINES) if turn % 2 == 0 else ("Caller", _CALLER_LINES)
        line = f"{speaker}: {rng.choice(pool)}"
        if rng.random() < 0.3:  # longer turns now and then
            line += " " + rng.choice(pool)
        lines.append(line)
        size += len(line) + 1
        turn += 1
    return "\n".join(lines)


def call_completed_body(transcript_chars: int) -> bytes:
    """The call.completed fixture with its transcript replaced, as compact UTF-8 JSON bytes."""
    payload: dict[str, Any] = json.loads(fixture_text("call.completed"))
    payload["transcript"] = make_transcript(transcript_chars)
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(body: bytes, *, secret: str = SECRET, when: datetime.datetime | None = None) -> dict[str, str]:
    """Headers for ``body``, signed now (or at ``when``) by svix's own ``Webhook.sign``."""
    from svix.webhooks import Webhook

    when = when or datetime.datetime.now(tz=datetime.timezone.utc)
    signature = Webhook(secret).sign(MSG_ID, when, body.decode("utf-8"))
    return {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def verdict(ratio: float, target: float) -> str:
    return f"target <= {target:.2f}: {'MET' if ratio <= target else 'NOT MET'}"
