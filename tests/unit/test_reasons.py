"""Ranker reasons: the strongest positive contributions become plain sentences; cautions always show."""

from __future__ import annotations

import pytest

from features.availability import NO_SLOT_DAYS
from features.reasons import Candidate, explain, sentence

pytestmark = pytest.mark.unit


def _candidate(**changes: object) -> Candidate:
    base = {
        "distance_km": 3.24,
        "next_available_days": 2.4,
        "focus_match": True,
        "in_network": True,
        "accepts_plan": True,
        "rating": 4.8,
        "review_count": 120,
        "language_match": True,
        "language": "es",
        "continuity": False,
        "same_system": False,
        "completion_rate": 0.81,
        "no_show_rate": 0.12,
        "reason_code": "I50.9",
    }
    base.update(changes)
    return Candidate(**base)  # type: ignore[arg-type]


def test_the_issue_examples_read_as_written() -> None:
    c = _candidate()
    assert sentence("distance_km", c) == "3.2 km away"
    assert sentence("next_available_days", c) == "next opening in 2 days"
    assert sentence("focus_match", c) == "treats heart failure"
    assert sentence("in_network", c) == "in the patient's network"
    assert sentence("rating_shrunk", c) == "4.8★ from 120 reviews"
    assert sentence("language_match", c) == "speaks Spanish"


def test_sentences_follow_the_largest_positive_contributions() -> None:
    # Given contributions where focus and network help most, distance hurts
    contrib = {
        "focus_match": 0.9,
        "in_network": 0.5,
        "review_count": 0.2,
        "rating_shrunk": 0.2,
        "distance_km": -0.4,
        "language_match": 0.05,
    }
    # When explained with a limit of three
    out = explain(contrib, _candidate(), limit=3)
    # Then the order follows the contributions; rating and reviews share one sentence; distance is absent
    assert out == ["treats heart failure", "in the patient's network", "4.8★ from 120 reviews"]


def test_cautions_always_show() -> None:
    out = explain(
        {"distance_km": 1.0},
        _candidate(in_network=False, accepts_plan=False, next_available_days=NO_SLOT_DAYS),
    )
    assert out == [
        "3.2 km away",
        "does not take the patient's plan",
        "no opening known in the next 4 months",
    ]
    unknown = explain({"in_network": 1.0}, _candidate(unknown_plan=True, in_network=False))
    assert "in the patient's network" not in unknown
    assert "plan not recognised: network status unknown" in unknown


def test_nothing_is_said_about_a_match_that_is_not_there() -> None:
    c = _candidate(focus_match=False, language_match=False, review_count=0, rating=None)
    assert sentence("focus_match", c) is None and sentence("language_match", c) is None
    assert sentence("rating_shrunk", c) == "no reviews yet"
    assert (
        sentence("next_available_days", _candidate(next_available_days=0.3)) == "next opening today"
    )
    assert (
        sentence("next_available_days", _candidate(next_available_days=1.2))
        == "next opening in 1 day"
    )


def test_candidate_from_a_pair_feature_row() -> None:
    from features.reasons import candidate_from

    row = {
        "distance_km": 5.0,
        "next_available_days": 3.0,
        "focus_match": 1.0,
        "in_network": 0.0,
        "accepts_plan": 1.0,
        "language_match": 0.0,
        "continuity": 1.0,
        "same_system": 0.0,
        "specialist_completion_rate": 0.7,
        "specialist_no_show_rate": 0.2,
        "review_count": 12.0,
    }
    c = candidate_from(row, rating=4.2, language="en", reason_code="M17.11")
    assert explain({"continuity": 0.3, "focus_match": 0.6}, c) == [
        "treats knee arthritis",
        "the patient has seen this specialist before",
        "out of the patient's network",
    ]
