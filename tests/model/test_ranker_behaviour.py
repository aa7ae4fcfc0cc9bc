"""Behavioural expectations of the trained specialist ranker, through the serving path (Matcher).

Invariance (a name change moves nothing), directional (closer or sooner never drops; taken out
of network it leaves the list unless out-of-network is allowed, and then it does not rise),
minimum functionality (a near, available, in-network specialist treating the reason is top 3).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from features.codes import reasons
from features.contract import split_multi
from features.matcher import Matcher, MatchRequest, SpecialistRanker
from training.ranker import load_ranker_data, train_ranker
from training.ranker_job import request_for_referral, snapshot_time, tables_for_matching

pytestmark = pytest.mark.model

Tables = dict[str, pd.DataFrame]
N_REQUESTS = 12


@pytest.fixture(scope="module")
def ranker(model_world: Path) -> SpecialistRanker:
    return train_ranker(load_ranker_data(model_world)).bundle()


@pytest.fixture(scope="module")
def tables(model_world: Path) -> Tables:
    return tables_for_matching(model_world)


@pytest.fixture(scope="module")
def now(model_world: Path) -> pd.Timestamp:
    found = snapshot_time(model_world)
    assert found is not None
    return found


@pytest.fixture(scope="module")
def requests(tables: Tables) -> list[MatchRequest]:
    """Requests for the latest referrals (the patients' own details), a few per urgency."""
    rf = tables["referrals"].sort_values("created_at")
    ids = rf["referral_id"].iloc[-400:].sample(N_REQUESTS, random_state=3).tolist()
    return [request_for_referral(tables, i) for i in ids]


def _ranking(matcher: Matcher, req: MatchRequest) -> list[str]:
    return [m.specialist_id for m in matcher.recommend(req, k=1000, reasons=False).matches]


def _with_specialist(tables: Tables, specialist_id: str, **changes: object) -> Tables:
    sp = tables["specialists"].copy()
    row = sp["specialist_id"] == specialist_id
    for column, value in changes.items():
        sp.loc[row, column] = value
    return {**tables, "specialists": sp}


def _with_free_slot_tomorrow(tables: Tables, specialist_id: str, now: pd.Timestamp) -> Tables:
    start = now + pd.Timedelta(days=1, hours=9)
    slot = pd.DataFrame(
        {
            "slot_id": ["SL-TEST"],
            "specialist_id": [specialist_id],
            "start": [start],
            "end": [start + pd.Timedelta(minutes=30)],
            "slot_type": ["routine"],
            "status": ["free"],
            "booked_at": [pd.NaT],
            "appointment_id": [None],
        }
    ).astype(tables["availability"].dtypes.to_dict())
    return {**tables, "availability": pd.concat([tables["availability"], slot])}


def test_a_name_change_moves_nothing(
    ranker: SpecialistRanker, tables: Tables, now: pd.Timestamp, requests: list[MatchRequest]
) -> None:
    # Given the directory, and the same directory with every specialist renamed
    renamed = tables["specialists"].assign(first_name="Alex", last_name="Morgan")
    before = Matcher.from_tables(ranker, tables, now=now)
    after = Matcher.from_tables(ranker, {**tables, "specialists": renamed}, now=now)
    # When the same referrals are ranked, then the rankings and scores are identical
    for req in requests:
        a = before.recommend(req, k=20, reasons=False).matches
        b = after.recommend(req, k=20, reasons=False).matches
        assert [(m.specialist_id, m.score) for m in a] == [(m.specialist_id, m.score) for m in b]


def test_moving_closer_never_drops(
    ranker: SpecialistRanker, tables: Tables, now: pd.Timestamp, requests: list[MatchRequest]
) -> None:
    base = Matcher.from_tables(ranker, tables, now=now)
    moved = 0
    for req in requests:
        order = _ranking(base, req)
        if len(order) < 2:
            continue
        # Given the specialist ranked 6th (or last, in a short list), when their practice moves
        # next to the patient
        pos = min(len(order), 6) - 1
        who = order[pos]
        closer = _with_specialist(
            tables, who, latitude=req.latitude + 0.002, longitude=req.longitude + 0.002
        )
        after = _ranking(Matcher.from_tables(ranker, closer, now=now), req)
        # Then they rank no lower than before
        assert after.index(who) <= pos, (req.specialty, who)
        moved += 1
    assert moved >= N_REQUESTS // 2


def test_an_earlier_opening_never_drops(
    ranker: SpecialistRanker, tables: Tables, now: pd.Timestamp, requests: list[MatchRequest]
) -> None:
    base = Matcher.from_tables(ranker, tables, now=now)
    tested = 0
    for req in requests:
        result = base.recommend(req, k=1000, reasons=False).matches
        later = [m for m in result[3:] if m.features["next_available_days"] > 3]
        if not later:
            continue
        # Given a specialist below the top 3 whose next opening is more than 3 days away
        who, rank = later[0].specialist_id, later[0].rank
        # When a free slot tomorrow is added to their calendar
        sooner = _with_free_slot_tomorrow(tables, who, now)
        after = Matcher.from_tables(ranker, sooner, now=now).recommend(req, k=1000, reasons=False)
        pos = [m.specialist_id for m in after.matches].index(who)
        # Then their opening is sooner and they rank no lower than before
        assert after.matches[pos].features["next_available_days"] < 2
        assert pos + 1 <= rank
        tested += 1
    assert tested >= N_REQUESTS // 2


def test_out_of_network_leaves_unless_allowed_and_does_not_rise(
    ranker: SpecialistRanker, tables: Tables, now: pd.Timestamp, requests: list[MatchRequest]
) -> None:
    base = Matcher.from_tables(ranker, tables, now=now)
    plans = tables["plans"].set_index("insurance_plan_id")
    tested = 0
    for req in requests:
        if req.insurance_plan_id is None or not split_multi(
            plans.at[req.insurance_plan_id, "network_ids"]
        ):
            continue
        allow = dataclasses.replace(req, allow_out_of_network=True)
        result = base.recommend(allow, k=1000, reasons=False).matches
        inside = [m for m in result if m.features["in_network"] == 1.0][:3]
        if not inside:
            continue
        # Given an in-network specialist in the top of the list
        who, rank = inside[0].specialist_id, inside[0].rank
        # When their practice leaves every network of the patient's plan and stops taking it
        plan_nets = set(split_multi(plans.at[req.insurance_plan_id, "network_ids"]))
        sp = tables["specialists"]
        row = sp.loc[sp["specialist_id"] == who].iloc[0]
        left = _with_specialist(
            tables,
            who,
            network_ids="|".join(n for n in split_multi(row["network_ids"]) if n not in plan_nets),
            accepted_plan_ids="|".join(
                p for p in split_multi(row["accepted_plan_ids"]) if p != req.insurance_plan_id
            ),
        )
        matcher = Matcher.from_tables(ranker, left, now=now)
        # Then an in-network search no longer offers them
        assert who not in _ranking(matcher, req)
        # And an out-of-network search flags them and does not rank them higher
        after = matcher.recommend(allow, k=1000, reasons=True).matches
        mine = next(m for m in after if m.specialist_id == who)
        assert mine.out_of_network and mine.rank >= rank
        assert "does not take the patient's plan" in mine.reasons
        tested += 1
    assert tested >= N_REQUESTS // 2


def test_a_near_available_in_network_focused_specialist_is_top_3(
    ranker: SpecialistRanker, tables: Tables, now: pd.Timestamp, requests: list[MatchRequest]
) -> None:
    plans = tables["plans"].set_index("insurance_plan_id")
    sp = tables["specialists"]
    tested = 0
    for req in requests:
        if req.insurance_plan_id is None:
            continue
        same = sp[(sp["specialty"] == req.specialty) & sp["accepting_new_patients"]]
        if same.empty:
            continue
        # Given a well-reviewed specialist of the needed specialty (4 stars or more), made near
        # (under 1 km), in the patient's network, treating the referral's reason, free tomorrow
        good = same[(same["rating"] >= 4.0) & (same["review_count"] >= 20)]
        if good.empty:
            continue
        row = good.iloc[0]
        who = str(row["specialist_id"])
        category = reasons()[req.reason_code].category
        nets = split_multi(plans.at[req.insurance_plan_id, "network_ids"])
        changed = _with_specialist(
            tables,
            who,
            latitude=req.latitude + 0.006,
            longitude=req.longitude,
            focus_codes="|".join(dict.fromkeys([*split_multi(row["focus_codes"]), category])),
            network_ids="|".join(dict.fromkeys([*split_multi(row["network_ids"]), *nets])),
            accepted_plan_ids="|".join(
                dict.fromkeys([*split_multi(row["accepted_plan_ids"]), req.insurance_plan_id])
            ),
        )
        changed = _with_free_slot_tomorrow(changed, who, now)
        result = Matcher.from_tables(ranker, changed, now=now).recommend(req, k=3)
        # Then they are among the top 3, with reasons that say why
        top = {m.specialist_id: m for m in result.matches}
        assert who in top, (req.specialty, req.reason_code)
        assert any("km away" in r or "treats" in r or "network" in r for r in top[who].reasons)
        tested += 1
    assert tested >= N_REQUESTS // 2
