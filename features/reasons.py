"""Readable reasons for a ranked specialist, from the ranker's feature contributions.

For each of the top k candidates, the features that push its score up most (LightGBM
`pred_contrib`, i.e. TreeSHAP) become short sentences a coordinator can read: "3.2 km away",
"next opening in 2 days", "treats heart failure", "in the patient's network",
"4.8★ from 120 reviews". Facts a coordinator must not miss are stated whatever their
contribution (out of network, no known opening).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from features.availability import NO_SLOT_DAYS
from features.codes import reasons as reason_codes

LANGUAGE_NAMES: Final = {
    "en": "English",
    "es": "Spanish",
    "zh": "Chinese",
    "vi": "Vietnamese",
    "pt": "Portuguese",
    "ht": "Haitian Creole",
    "ko": "Korean",
    "ar": "Arabic",
    "ru": "Russian",
    "pl": "Polish",
    "fr": "French",
    "tl": "Tagalog",
}
# What the reasons say where the directory does not list a fact (a neutral value was used).
UNLISTED_AVAILABILITY: Final = "availability not listed in the directory: ask the practice"
UNLISTED_NETWORKS: Final = "the directory lists no networks: network status unknown"
NO_HISTORY: Final = "no referral history here yet"
# Features that share one sentence are reported once (the rating sentence covers both).
SAME_SENTENCE: Final = {"review_count": "rating_shrunk", "urgency_x_wait": "next_available_days"}


@dataclass(frozen=True)
class Candidate:
    """What the sentences need to know about one ranked candidate and its referral."""

    distance_km: float
    next_available_days: float
    focus_match: bool
    in_network: bool
    accepts_plan: bool
    rating: float | None
    review_count: int
    language_match: bool
    language: str
    continuity: bool
    same_system: bool
    completion_rate: float
    no_show_rate: float
    reason_code: str
    unknown_plan: bool = False
    # Directory facts a source may lack (directory imports: docs/fhir.md, "Neutral values").
    availability_listed: bool = True  # False: the directory has no slots for this specialist
    referral_history: int = -1  # referral outcomes known here (-1: not counted)
    visit_history: int = -1  # visit outcomes known here (-1: not counted)
    networks_listed: bool = True  # False: the directory lists no plans or networks at all


def _days(days: float) -> str:
    if days >= NO_SLOT_DAYS:
        return "no opening known in the next 4 months"
    whole = int(days)
    if whole <= 0:
        return "next opening today"
    return f"next opening in {whole} day{'s' if whole != 1 else ''}"


def sentence(feature: str, c: Candidate) -> str | None:
    """The sentence for one feature of a candidate (None when it says nothing useful)."""
    label = reason_codes().get(c.reason_code)
    if feature == "distance_km":
        return f"{c.distance_km:.1f} km away"
    if feature == "next_available_days":
        return _days(c.next_available_days) if c.availability_listed else UNLISTED_AVAILABILITY
    if feature == "focus_match":
        return f"treats {label.label}" if c.focus_match and label else None
    if feature in ("in_network", "accepts_plan"):
        if c.unknown_plan:
            return None
        if c.in_network:
            return "in the patient's network"
        return "accepts the patient's plan (out of network)" if c.accepts_plan else None
    if feature == "rating_shrunk":
        if c.rating is None or c.review_count == 0:
            return "no reviews yet"
        return f"{c.rating:.1f}★ from {c.review_count} review{'s' if c.review_count != 1 else ''}"
    if feature == "language_match":
        return f"speaks {LANGUAGE_NAMES.get(c.language, c.language)}" if c.language_match else None
    if feature == "continuity":
        return "the patient has seen this specialist before" if c.continuity else None
    if feature == "same_system":
        return "in the referring practice's health system" if c.same_system else None
    if feature == "specialist_completion_rate":
        if c.referral_history == 0:
            return NO_HISTORY
        return f"{c.completion_rate:.0%} of referrals here are completed"
    if feature == "specialist_no_show_rate":
        if c.visit_history == 0:
            return NO_HISTORY
        return f"patients keep {1 - c.no_show_rate:.0%} of their visits here"
    return None


def explain(contributions: Mapping[str, float], c: Candidate, limit: int = 4) -> list[str]:
    """Up to `limit` sentences for the features that raise this candidate's score most,
    then the cautions a coordinator must always see."""
    merged: dict[str, float] = {}
    for feature, value in contributions.items():
        key = SAME_SENTENCE.get(feature, feature)
        merged[key] = merged.get(key, 0.0) + float(value)
    out: list[str] = []
    for feature, value in sorted(merged.items(), key=lambda kv: -kv[1]):
        if value <= 0 or len(out) >= limit:
            break
        text = sentence(feature, c)
        if text and text not in out:
            out.append(text)
    cautions = []
    if not c.networks_listed:
        cautions.append(UNLISTED_NETWORKS)
    elif c.unknown_plan:
        cautions.append("plan not recognised: network status unknown")
    elif not c.in_network and not c.accepts_plan:
        cautions.append("does not take the patient's plan")
    elif not c.in_network:
        cautions.append("out of the patient's network")
    if not c.availability_listed:
        cautions.append(UNLISTED_AVAILABILITY)
    elif c.next_available_days >= NO_SLOT_DAYS:
        cautions.append(_days(c.next_available_days))
    return out + [x for x in cautions if x not in out]


def candidate_from(values: Mapping[str, Any], **extra: Any) -> Candidate:
    """A Candidate from a row of pair features plus directory and request fields."""
    fields: dict[str, Any] = {
        "distance_km": float(values["distance_km"]),
        "next_available_days": float(values["next_available_days"]),
        "focus_match": bool(values["focus_match"]),
        "in_network": bool(values["in_network"]),
        "accepts_plan": bool(values["accepts_plan"]),
        "language_match": bool(values["language_match"]),
        "continuity": bool(values["continuity"]),
        "same_system": bool(values["same_system"]),
        "completion_rate": float(values["specialist_completion_rate"]),
        "no_show_rate": float(values["specialist_no_show_rate"]),
        "review_count": int(values["review_count"]),
    }
    fields.update(extra)
    return Candidate(**fields)
