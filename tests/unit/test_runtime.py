"""serving.runtime in-process: recommendations, no-show risk, versions and failed loads."""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.keys import Caller, Role
from serving.runtime import UNVERSIONED, NotReadyError, RequestError, Runtime, bundle_version
from serving.schemas import (
    RECOMMENDED_ACTIONS,
    UNKNOWN_PLAN_WARNING,
    ContactRequest,
    NoShowRiskRequest,
    RecommendRequest,
    RiskTier,
    WorklistRequest,
    worklist_csv,
)
from serving.store import Store

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, small_world: Path) -> Store:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'referral.db'}"
    s = Store(url, audit_salt="test-salt")
    s.create()
    s.load_dataset(small_world)
    return s


@pytest.fixture(scope="module")
def runtime(store: Store, bundles: dict[str, Path], as_of: datetime) -> Runtime:
    rt = Runtime(store.url, bundles["ranker"], bundles["no_show"], now=as_of, store=store)
    assert rt.load(), rt.not_ready_reason
    return rt


def _referral(store: Store, **patient: object) -> dict[str, object]:
    t = store.read_tables(["patients", "specialists"])
    p, sp = t["patients"].iloc[0], t["specialists"].iloc[0]
    body = {
        "age": 60,
        "sex": str(p["sex"]),
        "language": str(p["preferred_language"]),
        "latitude": float(sp["latitude"]) + 0.01,
        "longitude": float(sp["longitude"]),
        "insurance_plan_id": str(p["insurance_plan_id"]),
        "patient_id": str(p["patient_id"]),
    }
    body.update(patient)
    return {
        "referral": {"patient": body, "specialty": str(sp["specialty"]), "reason_code": "I50.9"},
        "k": 3,
    }


def test_recommend_ranks_specialists_with_reasons(runtime: Runtime, store: Store) -> None:
    res = runtime.recommend(RecommendRequest.model_validate(_referral(store)), "rid1")
    assert res.request_id == "rid1"
    assert res.model_version == "7"  # no "version" in metadata.json: the VERSION file
    assert 1 <= len(res.specialists) <= 3
    assert [s.rank for s in res.specialists] == list(range(1, len(res.specialists) + 1))
    scores = [s.score for s in res.specialists]
    assert scores == sorted(scores, reverse=True)
    assert all(s.reasons for s in res.specialists)
    assert res.empty_reason is None


def test_unknown_plan_warns_and_claims_no_network(runtime: Runtime, store: Store) -> None:
    req = RecommendRequest.model_validate(_referral(store, insurance_plan_id="PLAN-NOPE"))
    res = runtime.recommend(req, "rid2")
    assert UNKNOWN_PLAN_WARNING in res.warnings
    assert all(not (s.in_network or s.accepts_plan) for s in res.specialists)


def test_empty_result_is_a_normal_answer(runtime: Runtime, store: Store) -> None:
    # Mid-Pacific: no specialist within any radius.
    body = _referral(store, latitude=0.0, longitude=-160.0)
    res = runtime.recommend(RecommendRequest.model_validate(body), "rid3")
    assert res.specialists == []
    assert res.empty_reason


def test_history_in_memory_is_what_the_store_answers(runtime: Runtime, store: Store) -> None:
    # The request path reads patient history from memory; it must equal the store's query
    patients = store.read_tables(["patients"])["patients"]["patient_id"].astype(str)
    some = sorted(patients.sample(40, random_state=1))
    from_memory = runtime.state.history(some)
    from_store = store.outcome_events(some)
    assert len(from_memory) > 0
    pd.testing.assert_frame_equal(from_memory, from_store, check_dtype=False)


def test_no_show_risk_is_calibrated_with_tiers_and_actions(runtime: Runtime, store: Store) -> None:
    t = store.read_tables(["specialists"])
    sp = t["specialists"].iloc[0]
    upcoming = store.upcoming_appointments(pd.Timestamp("2000-01-01"), pd.Timestamp("2100-01-01"))
    known = str(upcoming["patient_id"].iloc[0]) if len(upcoming) else None
    appointments = [
        {
            "appointment_id": f"A-{i}",
            "patient_id": known if i == 0 else None,
            "age": 30 + 10 * i,
            "sex": "F" if i % 2 else "M",
            "language": "en",
            "payer_type": ["commercial", "medicaid", "medicare"][i],
            "specialty": str(sp["specialty"]),
            "specialist_id": str(sp["specialist_id"]),
            "booked_at": "2025-01-02T09:00:00",
            "appointment_at": f"2025-01-{10 + i}T10:00:00",
            "urgency": "routine",
            "referral_type": "provider",
        }
        for i in range(3)
    ]
    res = runtime.no_show_risk(
        NoShowRiskRequest.model_validate({"appointments": appointments}), "r"
    )
    assert [r.appointment_id for r in res.predictions] == ["A-0", "A-1", "A-2"]
    assert res.model_version == UNVERSIONED
    for row in res.predictions:
        assert 0.0 <= row.risk <= 1.0
        assert row.recommended_action == RECOMMENDED_ACTIONS[row.tier]
        assert row.tier in set(RiskTier)
        assert len(row.top_factors) <= 3


def test_model_info_and_versions(runtime: Runtime) -> None:
    info = runtime.model_info(None, "r")
    assert [m.version for m in info.models] == ["7", UNVERSIONED]
    assert all(m.features for m in info.models)
    assert runtime.versions() == {"ranker": "7", "no_show": UNVERSIONED}


def test_bundle_version_prefers_metadata(tmp_path: Path) -> None:
    assert bundle_version(tmp_path) == UNVERSIONED
    (tmp_path / "VERSION").write_text("3")
    assert bundle_version(tmp_path) == "3"
    (tmp_path / "metadata.json").write_text(json.dumps({"version": "v12"}))
    assert bundle_version(tmp_path) == "v12"


def test_corrupt_ranker_bundle_keeps_not_ready(
    tmp_path: Path, store: Store, bundles: dict[str, Path], as_of: datetime
) -> None:
    broken = Path(shutil.copytree(bundles["ranker"], tmp_path / "ranker"))
    text = (broken / "model.txt").read_text()
    (broken / "model.txt").write_text(text[: len(text) // 3])
    rt = Runtime(store.url, broken, bundles["no_show"], now=as_of, store=store)
    assert not rt.load()
    assert not rt.ready
    assert rt.not_ready_reason is not None
    assert "ranker bundle" in rt.not_ready_reason and str(broken) in rt.not_ready_reason
    with pytest.raises(NotReadyError):
        rt.model_info(None, "r")


def test_failed_reload_keeps_the_old_state(
    tmp_path: Path, store: Store, bundles: dict[str, Path], as_of: datetime
) -> None:
    ranker = Path(shutil.copytree(bundles["ranker"], tmp_path / "ranker"))
    rt = Runtime(store.url, ranker, bundles["no_show"], now=as_of, store=store)
    assert rt.load()
    before = rt.state
    (ranker / "model.txt").write_text("garbage")
    assert not rt.load()
    assert rt.ready and rt.state is before
    assert rt.not_ready_reason is not None and "ranker bundle" in rt.not_ready_reason


def _window(store: Store, days: int = 7) -> tuple[datetime, datetime]:
    upcoming = store.upcoming_appointments(pd.Timestamp("2000-01-01"), pd.Timestamp("2100-01-01"))
    assert len(upcoming), "the small world has no upcoming appointments"
    first = pd.Timestamp(upcoming["appointment_at"].min()).normalize()
    return first.to_pydatetime(), (first + pd.Timedelta(days=days - 1)).to_pydatetime()


def test_worklist_is_sorted_by_risk_and_capped_per_day(runtime: Runtime, store: Store) -> None:
    start, end = _window(store)
    full = runtime.worklist(WorklistRequest(start=start.date(), end=end.date(), capacity=500), "w1")
    upcoming = store.upcoming_appointments(start, end + pd.Timedelta(days=1))
    assert len(full.rows) == len(upcoming) > 0
    risks = [r.risk for r in full.rows]
    assert risks == sorted(risks, reverse=True)
    assert all(r.recommended_action == RECOMMENDED_ACTIONS[r.tier] for r in full.rows)
    assert all(start.date() <= r.appointment_at.date() <= end.date() for r in full.rows)

    capped = runtime.worklist(WorklistRequest(start=start.date(), end=end.date(), capacity=1), "w2")
    days = [r.appointment_at.date() for r in capped.rows]
    assert len(days) == len(set(days)) == len({r.appointment_at.date() for r in full.rows})
    for row in capped.rows:  # each day keeps its riskiest appointment
        same_day = [
            r.risk for r in full.rows if r.appointment_at.date() == row.appointment_at.date()
        ]
        assert row.risk == max(same_day)


def test_worklist_scores_like_no_show_risk(runtime: Runtime, store: Store) -> None:
    start, end = _window(store, days=2)
    rows = runtime.worklist(WorklistRequest(start=start.date(), end=end.date()), "w").rows
    assert rows
    assert all(0.0 <= r.risk <= 1.0 and len(r.top_factors) <= 3 for r in rows)


def test_served_risk_equals_batch_scoring_with_every_outcome(
    runtime: Runtime, store: Store
) -> None:
    """No train/serve skew: the specialist and clinic no-show rates are computed from every
    recorded visit, as in training and batch scoring, not from the requesting patients' own
    history alone; a request without organization_id gets the specialist's clinic."""
    start, end = _window(store, days=14)
    flat = store.upcoming_appointments(start, end + pd.Timedelta(days=1))
    flat = flat.drop(columns=["outcome", "outcome_at"]).reset_index(drop=True)
    state = runtime.state
    batch = state.predictor.predict(flat, state.events)
    served = np.array([r.risk for r in runtime._risk_rows(state, flat)])
    assert np.allclose(served, batch, atol=1e-12)
    no_clinic = np.array(
        [r.risk for r in runtime._risk_rows(state, flat.drop(columns=["organization_id"]))]
    )
    assert np.allclose(no_clinic, batch, atol=1e-12)
    patients_only = state.predictor.predict(flat, state.history(sorted(set(flat["patient_id"]))))
    assert np.abs(patients_only - batch).max() > 1e-4  # what the old history gave differs


def test_worklist_filters_by_specialty_and_organization(runtime: Runtime, store: Store) -> None:
    start, end = _window(store)
    upcoming = store.upcoming_appointments(start, end + pd.Timedelta(days=1))
    specialty = str(upcoming["specialty"].iloc[0])
    org = str(upcoming["organization_id"].iloc[0])
    base = {"start": start.date(), "end": end.date(), "capacity": 500}
    by_specialty = runtime.worklist(WorklistRequest(**base, specialty=specialty), "w")
    expected = set(upcoming.loc[upcoming["specialty"] == specialty, "appointment_id"])
    assert {r.appointment_id for r in by_specialty.rows} == expected
    by_org = runtime.worklist(WorklistRequest(**base, organization_id=org), "w")
    expected = set(upcoming.loc[upcoming["organization_id"] == org, "appointment_id"])
    assert {r.appointment_id for r in by_org.rows} == expected
    nothing = runtime.worklist(WorklistRequest(**base, organization_id="ORG-NOPE"), "w")
    assert nothing.rows == []


def test_worklist_csv_has_a_header_and_one_line_per_row(runtime: Runtime, store: Store) -> None:
    start, end = _window(store, days=2)
    res = runtime.worklist(WorklistRequest(start=start.date(), end=end.date()), "w")
    lines = worklist_csv(res.rows).splitlines()
    assert lines[0].split(",")[0] == "appointment_id"
    assert len(lines) == len(res.rows) + 1


def test_contact_is_recorded_with_the_key_and_unknown_ids_are_404(
    runtime: Runtime, store: Store
) -> None:
    upcoming = store.upcoming_appointments(pd.Timestamp("2000-01-01"), pd.Timestamp("2100-01-01"))
    appointment_id = str(upcoming["appointment_id"].iloc[-1])
    req = ContactRequest(appointment_id=appointment_id, channel="call", outcome="reached")
    res = runtime.record_contact(req, "c1", caller=Caller("key-unit", Role.OUTREACH))
    assert res.appointment_id == appointment_id and res.request_id == "c1"
    log = store.contacts([appointment_id])
    assert "key-unit" in set(log["key_id"])
    unknown = ContactRequest(appointment_id="A-NOPE-1", channel="text", outcome="no_answer")
    with pytest.raises(RequestError) as err:
        runtime.record_contact(unknown, "c2", caller=Caller("key-unit", Role.OUTREACH))
    assert err.value.status == 404 and "A-NOPE-1" not in err.value.message


def test_reload_swaps_state_and_a_failed_reload_keeps_serving(
    tmp_path: Path, store: Store, bundles: dict[str, Path], as_of: datetime
) -> None:
    ranker = Path(shutil.copytree(bundles["ranker"], tmp_path / "ranker"))
    rt = Runtime(store.url, ranker, bundles["no_show"], now=as_of, store=store)
    assert rt.load()
    first = rt.state
    (ranker / "VERSION").write_text("8\n")
    ok = rt.reload(None, "r1")
    assert ok.reloaded and ok.versions["ranker"] == "8" and rt.state is not first
    second = rt.state
    (ranker / "model.txt").write_text("garbage")
    with pytest.raises(RequestError) as err:
        rt.reload(None, "r2")
    assert err.value.status == 409 and "ranker bundle" in err.value.message
    assert rt.state is second and rt.versions()["ranker"] == "8"


@pytest.mark.parametrize(
    "last, expected",
    [
        ("language", "language"),
        ("sex", "sex"),
        ("network", "network"),
        ("accepting_new_patients", "accepting_new_patients"),
        ("specialty", "specialty"),
        ("distance", "distance"),
    ],
)
def test_empty_recommendations_are_counted_by_the_filter_that_emptied_them(
    last: str, expected: str
) -> None:
    # Given retrieval's own explanation for a list emptied by each filter
    from features.retrieval import FILTERS, DirectoryIndex, RetrievalRequest
    from serving.service import empty_filter

    removed = dict.fromkeys(FILTERS, 0) | {last: 3}
    req = RetrievalRequest(
        latitude=41.9,
        longitude=-87.6,
        specialty="207RC0000X",
        urgency="routine",
        insurance_plan_id="P",
        language="ko",
        require_language=True,
        sex="F",
        require_sex=True,
    )
    reason = DirectoryIndex._empty_reason(req, removed, 40.0)
    # Then the metrics label names that filter
    assert empty_filter(reason) == expected


def test_a_reload_in_one_worker_is_followed_by_the_others(
    store: Store, bundles: dict[str, Path], as_of: datetime
) -> None:
    # Given two workers' runtimes on one store, the second following reloads
    first = Runtime(store.url, bundles["ranker"], bundles["no_show"], now=as_of, store=store)
    second = Runtime(store.url, bundles["ranker"], bundles["no_show"], now=as_of, store=store)
    assert first.load() and second.load()
    before = second.state
    second.follow_reloads(interval_s=0.05)
    # When the first reloads (an /admin/reload reaching that worker)
    first.reload(None, "r")
    # Then the second reloads too, within a few polls
    deadline = time.monotonic() + 10
    while second.generation != first.generation and time.monotonic() < deadline:
        time.sleep(0.05)
    assert second.generation == first.generation is not None
    assert second.state is not before


def test_objects_made_after_the_settle_are_frozen_out_of_full_collections() -> None:
    import gc

    from serving.runtime import freeze_new_objects

    class Late:  # e.g. the ZIP table the FHIR warm-up builds after the models' load
        pass

    try:
        late = [Late() for _ in range(1000)]
        frozen = gc.get_freeze_count()
        freeze_new_objects()
        assert gc.get_freeze_count() >= frozen + len(late)
        in_generations = {id(o) for g in range(3) for o in gc.get_objects(g)}
        assert not any(id(o) in in_generations for o in late)
    finally:
        gc.unfreeze()
