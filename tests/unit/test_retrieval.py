"""Candidate retrieval: hard filters, radius widening, empty-result reasons, brute-force equivalence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.codes import specialties
from features.contract import split_multi
from features.geo import haversine_km, offset_km
from features.network import network_matrices
from features.retrieval import (
    BASE_RADIUS_KM,
    FILTERS,
    MAX_RADIUS_KM,
    DirectoryIndex,
    RetrievalRequest,
    RetrievalResult,
    radius_schedule,
)

pytestmark = pytest.mark.unit

CARDIOLOGY = "207RC0000X"
ELECTROPHYSIOLOGY = "207RC0001X"
DERMATOLOGY = "207N00000X"
NEUROLOGY = "2084N0400X"
UROLOGY = "208800000X"
HOME_LAT, HOME_LON = 40.0, -75.0

# (specialty, north km, east km, accepting, languages, sex, network_ids, accepted_plan_ids)
SMALL = [
    (CARDIOLOGY, 5, 0, True, "en|es", "F", "NET-A", "PLN-A"),  # 0: near, in A
    (ELECTROPHYSIOLOGY, 0, 10, True, "en", "M", "NET-A", "PLN-A"),  # 1: related, in A
    (CARDIOLOGY, -20, 0, False, "en", "F", "NET-A", "PLN-A"),  # 2: not accepting
    (CARDIOLOGY, 0, -30, True, "en", "M", "NET-B", "PLN-B"),  # 3: out of A's network
    (DERMATOLOGY, 2, 0, True, "en", "F", "NET-A", "PLN-A"),  # 4: other specialty
    (CARDIOLOGY, 100, 0, True, "en", "F", "NET-A", "PLN-A"),  # 5: far
    (NEUROLOGY, 3, 0, False, "en", "M", "NET-A", "PLN-A"),  # 6: only neurologist, full
    (CARDIOLOGY, 0, 55, True, "en|zh", "M", "NET-B", "PLN-A|PLN-B"),  # 7: accepts A, 55 km
]


def _small_directory() -> tuple[pd.DataFrame, pd.DataFrame]:
    north = np.array([s[1] for s in SMALL], dtype=float)
    east = np.array([s[2] for s in SMALL], dtype=float)
    lat, lon = offset_km(np.full(len(SMALL), HOME_LAT), np.full(len(SMALL), HOME_LON), north, east)
    specialists = pd.DataFrame(
        {
            "specialist_id": [f"S{i}" for i in range(len(SMALL))],
            "sex": [s[5] for s in SMALL],
            "languages": [s[4] for s in SMALL],
            "specialty": [s[0] for s in SMALL],
            "network_ids": [s[6] for s in SMALL],
            "accepted_plan_ids": [s[7] for s in SMALL],
            "latitude": lat,
            "longitude": lon,
            "accepting_new_patients": [s[3] for s in SMALL],
        }
    )
    plans = pd.DataFrame(
        {"insurance_plan_id": ["PLN-A", "PLN-B"], "network_ids": ["NET-A", "NET-B"]}
    )
    return specialists, plans


@pytest.fixture(scope="module")
def small() -> DirectoryIndex:
    return DirectoryIndex(*_small_directory())


def _req(**kw: object) -> RetrievalRequest:
    base: dict[str, object] = {
        "latitude": HOME_LAT,
        "longitude": HOME_LON,
        "specialty": CARDIOLOGY,
        "urgency": "routine",
        "insurance_plan_id": "PLN-A",
        "min_candidates": 1,
    }
    base.update(kw)
    return RetrievalRequest(**base)  # type: ignore[arg-type]


def _accounted(res: RetrievalResult) -> None:
    assert list(res.removed_by) == list(FILTERS)
    assert sum(res.removed_by.values()) + len(res.rows) == res.considered


# -- hand-made directory -----------------------------------------------------------------------


def test_filters_in_order_with_related_specialty_included(small: DirectoryIndex) -> None:
    # Given a routine cardiology referral on plan A that needs one candidate
    res = small.retrieve(_req())
    # Then the cardiologist and the related electrophysiologist within 40 km are returned,
    # nearest first, and each other specialist is counted against the filter that removed it
    assert res.rows.tolist() == [0, 1]
    assert res.distance_km == pytest.approx([5.0, 10.0], rel=0.01)
    assert res.radius_km == BASE_RADIUS_KM["routine"]
    assert res.removed_by == {
        "specialty": 2,  # dermatologist, neurologist
        "accepting_new_patients": 1,  # row 2
        "distance": 2,  # rows 5 (100 km) and 7 (55 km)
        "network": 1,  # row 3 (NET-B, plan B only)
        "language": 0,
        "sex": 0,
    }
    assert res.in_network.tolist() == [True, True]
    assert res.out_of_network.tolist() == [False, False]
    assert res.empty_reason is None and not res.unknown_plan
    _accounted(res)


def test_related_specialties_work_both_ways_and_stop_there(small: DirectoryIndex) -> None:
    # Given an electrophysiology referral (related: cardiology) and a dermatology one (no relations)
    ep = small.retrieve(_req(specialty=ELECTROPHYSIOLOGY))
    derm = small.retrieve(_req(specialty=DERMATOLOGY))
    # Then electrophysiology also reaches the general cardiologist; dermatology only itself
    assert ep.rows.tolist() == [0, 1]
    assert derm.rows.tolist() == [4]


def test_stat_uses_a_smaller_base_radius_than_routine(small: DirectoryIndex) -> None:
    # Given the same referral as stat and as routine, with enough candidates nearby for both
    stat = small.retrieve(_req(urgency="stat"))
    routine = small.retrieve(_req(urgency="routine"))
    # Then stat searched 15 km, routine 40 km
    assert stat.radius_km == 15.0 < routine.radius_km == 40.0
    assert BASE_RADIUS_KM["stat"] < BASE_RADIUS_KM["urgent"] < BASE_RADIUS_KM["routine"]
    # And for plan B (whose only cardiologist is 30 km away) stat must widen where routine need not
    stat_b = small.retrieve(_req(urgency="stat", insurance_plan_id="PLN-B"))
    routine_b = small.retrieve(_req(urgency="routine", insurance_plan_id="PLN-B"))
    assert stat_b.rows.tolist() == routine_b.rows.tolist() == [3]
    assert stat_b.radius_km == pytest.approx(15.0 * 1.5 * 1.5)
    assert routine_b.radius_km == 40.0


def test_sparse_area_widens_until_min_candidates(small: DirectoryIndex) -> None:
    # Given plan A needs three candidates; only two are within the 40 km base
    res = small.retrieve(_req(min_candidates=3))
    # Then the radius grows x1.5 once (60 km) and picks up row 7 at 55 km (accepts plan A)
    assert res.radius_km == pytest.approx(60.0)
    assert res.rows.tolist() == [0, 1, 7]
    assert res.in_network.tolist() == [True, True, False]
    assert res.accepts_plan.tolist() == [True, True, True]
    _accounted(res)


def test_widening_stops_at_the_cap(small: DirectoryIndex) -> None:
    # Given ten candidates wanted but only four cardiologists take plan A at all
    res = small.retrieve(_req(min_candidates=10))
    # Then the search ends at the 150 km cap with the far cardiologist included
    assert res.radius_km == MAX_RADIUS_KM
    assert res.rows.tolist() == [0, 1, 7, 5]
    # And a request's max_distance_km caps both the start and the widening
    capped = small.retrieve(_req(min_candidates=10, max_distance_km=50.0))
    assert capped.radius_km == 50.0
    assert capped.rows.tolist() == [0, 1]
    start_capped = small.retrieve(_req(max_distance_km=8.0))
    assert start_capped.radius_km == 8.0 and start_capped.rows.tolist() == [0]
    assert radius_schedule("routine", None) == pytest.approx([40.0, 60.0, 90.0, 135.0, 150.0])


def test_allow_out_of_network_keeps_and_flags(small: DirectoryIndex) -> None:
    # Given plan A with out-of-network allowed
    res = small.retrieve(_req(allow_out_of_network=True))
    # Then the NET-B cardiologist at 30 km is kept and flagged; nobody is removed by network
    assert res.rows.tolist() == [0, 1, 3]
    assert res.out_of_network.tolist() == [False, False, True]
    assert res.in_network.tolist() == [True, True, False]
    assert res.accepts_plan.tolist() == [True, True, False]
    assert res.removed_by["network"] == 0
    _accounted(res)


@pytest.mark.parametrize("plan", ["PLN-UNKNOWN", None])
def test_unknown_plan_skips_the_network_filter(small: DirectoryIndex, plan: str | None) -> None:
    # Given a plan id the plans table does not know (or none at all)
    res = small.retrieve(_req(insurance_plan_id=plan))
    # Then nothing is filtered or claimed on network grounds
    assert res.unknown_plan
    assert res.rows.tolist() == [0, 1, 3]
    assert not res.in_network.any() and not res.accepts_plan.any()
    assert not res.out_of_network.any()
    assert res.removed_by["network"] == 0


def test_required_language_and_sex_filter(small: DirectoryIndex) -> None:
    # Given Spanish required, then female required
    es = small.retrieve(_req(language="es", require_language=True))
    fem = small.retrieve(_req(sex="F", require_sex=True))
    # Then only the Spanish-speaking / female cardiologists remain, counted under their filter
    assert es.rows.tolist() == [0] and es.removed_by["language"] == 1
    assert fem.rows.tolist() == [0] and fem.removed_by["sex"] == 1
    # And a preferred (not required) language filters nothing
    assert small.retrieve(_req(language="ko")).rows.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("kw", "last_filter", "phrases"),
    [
        ({"specialty": UROLOGY}, "specialty", ["practises Urology", "check the specialty code"]),
        ({"specialty": NEUROLOGY}, "accepting_new_patients", ["accepting new patients"]),
        ({"max_distance_km": 3.0}, "distance", ["within 3 km", "widen max_distance_km"]),
        (
            {"insurance_plan_id": "PLN-B", "max_distance_km": 20.0},
            "network",
            ["no in-network Cardiology", "allow out-of-network"],
        ),
        (
            {"language": "ko", "require_language": True},
            "language",
            ["speaks 'ko'", "drop require_language"],
        ),
        (
            {"sex": "X", "require_sex": True, "max_distance_km": 8.0},
            "sex",
            ["of sex 'X'", "drop require_sex"],
        ),
    ],
)
def test_empty_result_names_the_filter_that_removed_the_last_candidates(
    small: DirectoryIndex, kw: dict[str, object], last_filter: str, phrases: list[str]
) -> None:
    # Given a request that nobody can satisfy
    res = small.retrieve(_req(**kw))
    # Then the result is empty, the last non-zero filter is the expected one, and the reason says so
    assert len(res.rows) == 0
    nonzero = [f for f in FILTERS if res.removed_by[f] > 0]
    assert nonzero[-1] == last_filter
    assert res.empty_reason is not None
    for phrase in phrases:
        assert phrase in res.empty_reason
    _accounted(res)


def test_retrieve_many_matches_retrieve(small: DirectoryIndex) -> None:
    # Given a batch of requests
    reqs = [_req(), _req(urgency="stat", insurance_plan_id="PLN-B"), _req(specialty=UROLOGY)]
    # Then the batch gives the same rows as one call each
    batch = small.retrieve_many(reqs)
    assert [r.rows.tolist() for r in batch] == [small.retrieve(q).rows.tolist() for q in reqs]


def test_unknown_urgency_is_rejected(small: DirectoryIndex) -> None:
    with pytest.raises(ValueError, match="urgency"):
        small.retrieve(_req(urgency="whenever"))


# -- 50k random directory vs brute force -------------------------------------------------------

METROS = [(40.71, -74.0), (41.88, -87.63), (29.76, -95.37), (34.05, -118.24), (42.36, -71.06)]
NETWORKS = ["NET-1", "NET-2", "NET-3", "NET-4"]
PLANS = pd.DataFrame(
    {
        "insurance_plan_id": ["PLN-1", "PLN-2", "PLN-3", "PLN-OPEN"],
        "network_ids": ["NET-1", "NET-2|NET-3", "NET-4", ""],
    }
)
LANGS = ["es", "zh", "vi", "ko", "ru"]


def _random_directory(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    codes = list(specialties())
    n_metro = int(n * 0.9)
    centre = rng.integers(0, len(METROS), size=n_metro)
    clat = np.array([METROS[c][0] for c in centre])
    clon = np.array([METROS[c][1] for c in centre])
    mlat, mlon = offset_km(clat, clon, rng.normal(0, 20, n_metro), rng.normal(0, 20, n_metro))
    lat = np.concatenate([mlat, rng.uniform(25, 49, n - n_metro)])
    lon = np.concatenate([mlon, rng.uniform(-124, -67, n - n_metro)])
    nets = ["|".join(x for x in NETWORKS if rng.random() < 0.4) for _ in range(n)]
    plan_ids = PLANS["insurance_plan_id"].tolist()
    accepted = ["|".join(p for p in plan_ids if rng.random() < 0.3) for _ in range(n)]
    langs = [
        "en" + ("|" + LANGS[rng.integers(len(LANGS))] if rng.random() < 0.3 else "")
        for _ in range(n)
    ]
    return pd.DataFrame(
        {
            "specialist_id": np.arange(n).astype(str),
            "sex": rng.choice(["F", "M"], size=n),
            "languages": langs,
            "specialty": rng.choice(codes, size=n),
            "network_ids": nets,
            "accepted_plan_ids": accepted,
            "latitude": lat,
            "longitude": lon,
            "accepting_new_patients": rng.random(n) < 0.85,
        }
    )


def _random_requests(n: int, seed: int) -> list[RetrievalRequest]:
    rng = np.random.default_rng(seed)
    codes = [*specialties(), UROLOGY, "999999999X"]
    plans = [*PLANS["insurance_plan_id"].tolist(), None, "PLN-UNKNOWN"]
    out = []
    for _ in range(n):
        if rng.random() < 0.7:
            c = METROS[rng.integers(len(METROS))]
            lat_a, lon_a = offset_km(
                np.array([c[0]]), np.array([c[1]]), rng.normal(0, 40, 1), rng.normal(0, 40, 1)
            )
            lat, lon = float(lat_a[0]), float(lon_a[0])
        else:
            lat, lon = float(rng.uniform(25, 49)), float(rng.uniform(-124, -67))
        out.append(
            RetrievalRequest(
                latitude=lat,
                longitude=lon,
                specialty=str(codes[rng.integers(len(codes))]),
                urgency=str(rng.choice(["routine", "urgent", "stat"])),
                insurance_plan_id=plans[rng.integers(len(plans))],
                allow_out_of_network=bool(rng.random() < 0.3),
                max_distance_km=None if rng.random() < 0.5 else float(rng.uniform(5, 200)),
                language=str(rng.choice(["en", *LANGS, "pl"])),
                require_language=bool(rng.random() < 0.25),
                sex=str(rng.choice(["F", "M"])),
                require_sex=bool(rng.random() < 0.2),
                min_candidates=int(rng.integers(1, 40)),
            )
        )
    return out


def _brute_force(
    spec: pd.DataFrame, in_net: np.ndarray, accepts: np.ndarray, plan_row: dict[str, int]
) -> Callable[[RetrievalRequest], dict[str, Any]]:
    """A straightforward reference: haversine to every row, the same filters and radius rule."""
    codes = spec["specialty"].to_numpy(dtype=object)
    accepting = spec["accepting_new_patients"].to_numpy(dtype=bool)
    lat = spec["latitude"].to_numpy(dtype=float)
    lon = spec["longitude"].to_numpy(dtype=float)
    langs = [set(split_multi(v)) for v in spec["languages"].tolist()]
    sexes = spec["sex"].to_numpy(dtype=object)
    n = len(spec)

    def run(req: RetrievalRequest) -> dict[str, Any]:
        dist = haversine_km(req.latitude, req.longitude, lat, lon)
        known = specialties().get(req.specialty)
        wanted = {req.specialty, *(known.related if known else ())}
        masks: dict[str, np.ndarray] = {
            "specialty": np.isin(codes, list(wanted)),
            "accepting_new_patients": accepting,
        }
        p = plan_row.get(req.insurance_plan_id) if req.insurance_plan_id else None
        if p is None or req.allow_out_of_network:
            masks["network"] = np.ones(n, dtype=bool)
        else:
            masks["network"] = in_net[p] | accepts[p]
        masks["language"] = (
            np.array([req.language in s for s in langs])
            if req.require_language
            else np.ones(n, dtype=bool)
        )
        masks["sex"] = sexes == req.sex if req.require_sex else np.ones(n, dtype=bool)
        cap = min(MAX_RADIUS_KM, req.max_distance_km or np.inf)
        radius = min(BASE_RADIUS_KM[req.urgency], cap)
        while True:
            masks["distance"] = dist <= radius
            keep = np.ones(n, dtype=bool)
            removed = {}
            for f in FILTERS:
                removed[f] = int((keep & ~masks[f]).sum())
                keep &= masks[f]
            if keep.sum() >= req.min_candidates or radius >= cap:
                break
            radius = min(radius * 1.5, cap)
        rows = np.flatnonzero(keep)
        rows = rows[np.lexsort((rows, dist[rows]))]
        oon = (
            ~(in_net[p, rows] | accepts[p, rows])
            if p is not None and req.allow_out_of_network
            else np.zeros(len(rows), dtype=bool)
        )
        return {
            "rows": rows,
            "dist": dist[rows],
            "radius": radius,
            "removed": removed,
            "in_network": in_net[p, rows] if p is not None else np.zeros(len(rows), bool),
            "oon": oon,
        }

    return run


def test_grid_retrieval_equals_brute_force_on_50k_specialists() -> None:
    # Given a seeded 50k-specialist directory (five metros plus rural scatter) and 200 requests
    spec = _random_directory(50_000, seed=7)
    index = DirectoryIndex(spec, PLANS)
    in_net, accepts, plan_row = network_matrices(PLANS, spec)
    brute = _brute_force(spec, in_net, accepts, plan_row)
    requests = _random_requests(200, seed=11)
    widened = empties = 0
    # When each is retrieved through the grid and by brute force
    for req in requests:
        got = index.retrieve(req)
        want = brute(req)
        # Then rows, order, distances, radius, counts and flags agree
        np.testing.assert_array_equal(got.rows, want["rows"], err_msg=str(req))
        np.testing.assert_allclose(got.distance_km, want["dist"], rtol=1e-12)
        assert got.radius_km == pytest.approx(want["radius"]), req
        assert got.removed_by == want["removed"], req
        np.testing.assert_array_equal(got.in_network, want["in_network"])
        np.testing.assert_array_equal(got.out_of_network, want["oon"])
        widened += got.radius_km > min(BASE_RADIUS_KM[req.urgency], req.max_distance_km or 1e9)
        empties += len(got.rows) == 0
    # And the sample exercised widening, empty results and non-empty ones
    assert widened > 20
    assert 0 < empties < len(requests) // 2
