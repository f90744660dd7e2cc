"""The "did you mean" of a misspelt name: event types, fields, header names.

Standard library only, imports nothing of the package: the registry (`_models`) and the
command line both use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["close_matches", "did_you_mean"]


def close_matches(word: str, candidates: Sequence[str]) -> list[str]:
    """The candidates ``word`` may be a misspelling of; the one differing only in case alone."""
    folded = {candidate.lower(): candidate for candidate in candidates}
    if word.lower() in folded:
        return [folded[word.lower()]]
    import difflib  # only when a name is wrong

    return difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)


def did_you_mean(word: str, candidates: Sequence[str]) -> str:
    """`` (did you mean X?)`` to end a message with, or nothing when no candidate is close."""
    matches = close_matches(word, candidates)
    return f" (did you mean {' or '.join(matches)}?)" if matches else ""
