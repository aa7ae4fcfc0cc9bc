"""The service's framework-free core: store, matcher and no-show model behind one object.

`Runtime` owns the database (`serving.store.Store`) and an immutable `RuntimeState` (matcher,
no-show predictor, the optional outreach-uplift model, directory names, plan payer types, model
versions). `load()` builds a complete new state and swaps it in with one attribute assignment,
so a request sees either the old or the new state, never a mix; when anything fails the old
state stays and `not_ready_reason` says what (the failing bundle or the store). Without a state
the runtime is not ready and answers nothing: it never invents a score.

Model versions come from each bundle's ``metadata.json`` ("version"), else the bundle folder's
``VERSION`` file, else "unversioned".

The outreach-uplift bundle (`features.uplift`: the expected benefit of an outreach call) is
optional: without one, every ``expected_benefit`` is null and the service is still ready. A
configured folder that does not load fails the load like the other bundles; a folder taken from
the BentoML store (``uplift_if_present``) that is gone counts as no model.

The clock: ``now`` (a synthetic world's snapshot time, its manifest's ``as_of``) or, when None,
the wall clock (naive local time, the data contract's convention).

Import rule: `features` and third-party libraries only; lightgbm (through `features.matcher`,
`features.predictor` and `features.uplift`) is imported when the models are loaded, not when
this module is.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time as time_module
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd
from sqlalchemy.engine import make_url

from serving import keys
from serving.console_api import (
    PAGES,
    CatalogResponse,
    ModelPlot,
    ModelPlotRequest,
    Reports,
    WhoAmIResponse,
    build_catalog,
    plot_payload,
    read_reports,
)
from serving.schemas import (
    UPLIFT_NOT_LOADED,
    ContactOutcome,
    ContactRequest,
    ContactResponse,
    CreatedKey,
    CreateKeyRequest,
    FeedbackRequest,
    FeedbackResponse,
    KeyInfo,
    KeyListResponse,
    ModelInfo,
    ModelInfoResponse,
    MonitoringRequest,
    MonitoringResponse,
    NoShowRiskRequest,
    NoShowRiskResponse,
    RecommendRequest,
    RecommendResponse,
    ReloadResponse,
    RevokedKey,
    RevokeKeyRequest,
    RiskRow,
    UnknownEvent,
    WorklistOrder,
    WorklistRequest,
    WorklistResponse,
    WorklistRow,
    appointments_frame,
    match_response,
    request_warnings,
    risk_rows,
    to_match_request,
)
from serving.store import Store, utcnow

if TYPE_CHECKING:
    from features.matcher import Matcher
    from features.no_show import FeatureHistory
    from features.predictor import NoShowPredictor
    from features.uplift import UpliftPredictor

log = logging.getLogger(__name__)

UNVERSIONED: Final = "unversioned"
RELOAD_SETTING: Final = "models_generation"  # bumped by each successful /admin/reload
RELOAD_POLL_S: Final = 2.0
RANKER: Final = "ranker"
NO_SHOW: Final = "no_show"
UPLIFT: Final = "outreach_uplift"  # in `versions` only when the bundle is loaded
UPLIFT_MODEL: Final = "outreach-uplift"  # its name in /model_info, reports and the model store
NO_UPLIFT_MESSAGE: Final = "no outreach-uplift model: expected_benefit is null"
NO_SHOW_MODEL: Final = "no-show"  # model names in the prediction log
RANKER_MODEL: Final = "specialist-ranker"
# Tables the matcher needs (appointments and referrals give outcome rates and continuity).
MATCHER_TABLES: Final = (
    "specialists",
    "plans",
    "organizations",
    "availability",
    "appointments",
    "referrals",
)


class NotReadyError(RuntimeError):
    """The runtime has no loaded state (see `Runtime.not_ready_reason`)."""


class RequestError(Exception):
    """A request that cannot be answered as asked: an HTTP status and a message that never
    echoes submitted values (e.g. 404 for an unknown appointment, 409 for a failed reload)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def bundle_version(directory: Path) -> str:
    """A bundle's version: metadata.json "version", else the VERSION file, else "unversioned"."""
    meta_path = directory / "metadata.json"
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    except (OSError, ValueError):
        meta = {}
    version = meta.get("version") if isinstance(meta, dict) else None
    if version not in (None, ""):
        return str(version)
    version_path = directory / "VERSION"
    if version_path.exists():
        text = version_path.read_text().strip()
        if text:
            return text
    return UNVERSIONED


def _trained_at(meta: Mapping[str, Any]) -> datetime | None:
    value = meta.get("trained_at")
    if value in (None, ""):
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None
    return None if pd.isna(stamp) else stamp.to_pydatetime()


def _info(
    name: str, version: str, meta: Mapping[str, Any], features: list[str], reports: Reports
) -> ModelInfo:
    run_id = meta.get("run_id")
    return ModelInfo(
        name=str(meta.get("name") or name),
        version=version,
        run_id=None if run_id in (None, "") else str(run_id),
        trained_at=_trained_at(meta),
        features=features,
        metrics=reports.metrics,
        card_markdown=reports.card_markdown,
        plots=sorted(reports.plots),
    )


@dataclass(frozen=True)
class RuntimeState:
    """Everything a request reads, built once per load and never changed afterwards."""

    matcher: Matcher
    predictor: NoShowPredictor
    directory: Mapping[str, tuple[str, str]]  # specialist_id -> (display name, NUCC code)
    plan_payer_types: Mapping[str, str]  # insurance_plan_id -> payer_type
    versions: Mapping[str, str]  # RANKER / NO_SHOW -> version
    models: tuple[ModelInfo, ...]
    loaded_at: datetime
    events: pd.DataFrame  # recorded outcomes (as `Store.outcome_events`), sorted by patient
    # `events` indexed once per load for the no-show features: a request looks its rows up
    # here (the same features `events` gives, as in batch scoring) instead of filtering,
    # factorizing and sorting every recorded outcome again.
    feature_history: FeatureHistory
    positions: Mapping[str, tuple[float, float]]  # specialist_id -> practice (lat, lon)
    catalog: Mapping[str, Any]  # the /catalog body, without request_id
    reports: Mapping[str, Reports]  # "specialist-ranker" / "no-show" (/ "outreach-uplift")
    uplift: UpliftPredictor | None = None  # None: no outreach-uplift model, benefits are null
    clinics: Mapping[str, str] = field(default_factory=dict)  # specialist_id -> organization_id

    def history(
        self,
        patient_ids: list[str],
        specialist_ids: list[str] | None = None,
        organization_ids: list[str] | None = None,
    ) -> pd.DataFrame:
        """The recorded outcomes (as of the load, from memory: no database round trip on the
        request path) that features of these rows read: their patients' own history, and every
        visit with their specialists and clinics (whose no-show rates are features). Training
        and batch scoring see every outcome; a patient-only history would leave the specialist
        and clinic rates at the base rate (a train/serve skew)."""
        ev = self.events
        keep = ev["patient_id"].isin(patient_ids)
        if specialist_ids:
            keep |= ev["specialist_id"].isin(specialist_ids)
        if organization_ids:
            keep |= ev["organization_id"].isin(organization_ids)
        return ev[keep].reset_index(drop=True)


class Runtime:
    """Answers /recommend, /no_show_risk and /model_info from one loaded state."""

    def __init__(
        self,
        store_url: str,
        ranker_dir: Path,
        no_show_dir: Path,
        now: datetime | None = None,
        *,
        store: Store | None = None,
        settle_heap: bool = False,
        checkpoint_seconds: float | None = None,
        tiers: str | None = None,
        uplift_dir: Path | None = None,
        uplift_if_present: bool = False,
    ):
        """`store`: an already open Store for `store_url` (tests); default: a new one.
        `settle_heap`: after each load, collect and freeze the heap (`settle_heap`; servers).
        `checkpoint_seconds`: a new store's SQLite log checkpoints, in the background (`Store`;
        servers).
        `tiers`: "medium=0.2,high=0.4" overrides the no-show bundle's tier thresholds.
        `uplift_dir`: the outreach-uplift bundle (None: none, expected benefits are null); a
        folder that fails to load fails the load, unless `uplift_if_present` (a folder found in
        the BentoML store) and it no longer exists: then it counts as no model."""
        self.store = (
            store if store is not None else Store(store_url, checkpoint_seconds=checkpoint_seconds)
        )
        self.ranker_dir = Path(ranker_dir)
        self.no_show_dir = Path(no_show_dir)
        self.uplift_dir = None if uplift_dir is None else Path(uplift_dir)
        self.uplift_if_present = uplift_if_present
        self.now = now
        self._state: RuntimeState | None = None
        self._load_lock = threading.Lock()
        self.not_ready_reason: str | None = "not loaded yet"
        self.settle_heap = settle_heap
        self.tiers = tiers
        self.generation: str | None = None  # the store's RELOAD_SETTING seen at the last load
        self._follower: threading.Thread | None = None

    # -- state ----------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._state is not None

    @property
    def state(self) -> RuntimeState:
        state = self._state
        if state is None:
            raise NotReadyError(self.not_ready_reason or "not loaded")
        return state

    def clock(self) -> datetime:
        """The request clock: the configured snapshot time, else the wall clock."""
        return self.now if self.now is not None else datetime.now()

    def _store_label(self) -> str:
        try:
            return make_url(self.store.url).render_as_string(hide_password=True)
        except Exception:  # an unparsable URL: say nothing about it
            return "(unparsable URL)"

    def load(self) -> bool:
        """Build a new state and swap it in; on failure keep the old one and record why.
        Returns True when the new state is in place."""
        with self._load_lock:
            try:
                generation = self.store.get_setting(RELOAD_SETTING)
            except Exception:  # an unreachable store fails in _build with its reason
                generation = None
            try:
                state = self._build()
            except _LoadError as exc:
                self.not_ready_reason = str(exc)
                log.error("load failed, keeping the previous state: %s", exc)
                return False
            self._state = state  # the atomic swap
            self.not_ready_reason = None
            self.generation = generation
            log.info("loaded models %s", dict(state.versions))
            if self.settle_heap:
                settle_heap()
            return True

    def follow_reloads(self, interval_s: float = RELOAD_POLL_S) -> None:
        """Reload whenever another worker has (a daemon thread polling the store's
        RELOAD_SETTING every `interval_s`): /admin/reload reaches one worker of several, and
        the others follow within `interval_s`."""
        if self._follower is not None:
            return

        def follow() -> None:
            while True:
                time_module.sleep(interval_s)
                try:
                    seen = self.store.get_setting(RELOAD_SETTING)
                except Exception as exc:
                    log.error("reload follower: store unavailable (%s)", type(exc).__name__)
                    continue
                if seen is not None and seen != self.generation:
                    log.info("another worker reloaded: reloading")
                    if not self.load():
                        self.generation = seen  # failed: logged; do not retry every tick

        self._follower = threading.Thread(target=follow, name="reload-follower", daemon=True)
        self._follower.start()

    def _build(self) -> RuntimeState:
        from features.compiled import TreeSettings
        from features.matcher import Matcher, SpecialistRanker
        from features.no_show import FeatureHistory
        from features.predictor import NoShowPredictor

        try:  # compiled trees (lleaves) unless REFERRAL_ML_TREES=lightgbm; bounded threads
            trees = TreeSettings.from_env()
        except ValueError as exc:
            raise _LoadError(str(exc)) from None
        try:
            ranker = SpecialistRanker.load(self.ranker_dir, trees=trees)
        except Exception as exc:
            raise _LoadError(f"ranker bundle in {self.ranker_dir}: {_short(exc)}") from exc
        try:
            predictor = NoShowPredictor.load(self.no_show_dir, trees=trees)
        except Exception as exc:
            raise _LoadError(f"no-show bundle in {self.no_show_dir}: {_short(exc)}") from exc
        log.info(
            "models scored by: ranker %s, no-show %s (%d thread(s) per call)",
            ranker.backend,
            predictor.backend,
            trees.threads,
        )
        if self.tiers:
            try:
                predictor.metadata["tiers"] = parse_tiers(self.tiers)
            except ValueError as exc:
                raise _LoadError(f"tier thresholds: {exc}") from None
        uplift = self._load_uplift()
        try:
            tables = self.store.read_tables(MATCHER_TABLES)
            events = self.store.outcome_events()  # every patient's history, held in memory
        except Exception as exc:
            raise _LoadError(
                f"store {self._store_label()}: cannot read tables ({type(exc).__name__})"
            ) from exc
        if tables["specialists"].empty:
            raise _LoadError(f"store {self._store_label()}: the specialists table is empty")
        try:
            matcher = Matcher.from_tables(
                ranker, tables, now=None if self.now is None else pd.Timestamp(self.now)
            )
        except Exception as exc:
            raise _LoadError(f"matcher: cannot build the directory index: {_short(exc)}") from exc
        sp = tables["specialists"]
        directory = {
            str(i): (f"{f} {last}".strip(), str(code))
            for i, f, last, code in zip(
                sp["specialist_id"], sp["first_name"], sp["last_name"], sp["specialty"], strict=True
            )
        }
        plans = tables["plans"]
        payer = dict(
            zip(
                plans["insurance_plan_id"].astype(str), plans["payer_type"].astype(str), strict=True
            )
        )
        positions = {
            str(i): (round(float(lat), 5), round(float(lon), 5))
            for i, lat, lon in zip(
                sp["specialist_id"], sp["latitude"], sp["longitude"], strict=True
            )
        }
        versions = {
            RANKER: bundle_version(self.ranker_dir),
            NO_SHOW: bundle_version(self.no_show_dir),
        }
        reports = {
            "specialist-ranker": read_reports(self.ranker_dir),
            "no-show": read_reports(self.no_show_dir),
        }
        models: tuple[ModelInfo, ...] = (
            _info(
                "specialist-ranker",
                versions[RANKER],
                ranker.metadata,
                list(ranker.features),
                reports["specialist-ranker"],
            ),
            _info(
                "no-show",
                versions[NO_SHOW],
                predictor.metadata,
                list(predictor.spec.columns),
                reports["no-show"],
            ),
        )
        if uplift is not None:
            assert self.uplift_dir is not None
            versions[UPLIFT] = bundle_version(self.uplift_dir)
            reports[UPLIFT_MODEL] = read_reports(self.uplift_dir)
            models += (
                _info(
                    UPLIFT_MODEL,
                    versions[UPLIFT],
                    uplift.metadata,
                    _uplift_inputs(uplift),
                    reports[UPLIFT_MODEL],
                ),
            )
        catalog = build_catalog(tables, as_of=self.clock(), tiers=predictor.tiers)
        return RuntimeState(
            events=events,
            feature_history=FeatureHistory.from_events(events),
            matcher=matcher,
            predictor=predictor,
            directory=directory,
            plan_payer_types=payer,
            versions=versions,
            models=models,
            loaded_at=datetime.now(),
            positions=positions,
            clinics={
                str(i): str(o)
                for i, o in zip(sp["specialist_id"], sp["organization_id"], strict=True)
                if isinstance(o, str) and o
            },
            catalog=catalog,
            reports=reports,
            uplift=uplift,
        )

    def _load_uplift(self) -> UpliftPredictor | None:
        """The outreach-uplift bundle, or None (logged once per load) when there is none."""
        directory = self.uplift_dir
        if directory is None or (self.uplift_if_present and not directory.exists()):
            log.info(NO_UPLIFT_MESSAGE)
            return None
        from features.uplift import UpliftPredictor

        try:
            return UpliftPredictor.load(directory)
        except Exception as exc:  # load's ValueError names the folder again: give its cause
            cause = exc.__cause__ or exc
            raise _LoadError(f"outreach-uplift bundle in {directory}: {_short(cause)}") from exc

    # -- requests -------------------------------------------------------------------------------

    def recommend(self, req: RecommendRequest, request_id: str) -> RecommendResponse:
        """Ranked specialists for one referral (an empty list is a normal answer)."""
        state = self.state
        as_of = self.clock()
        result = state.matcher.recommend(to_match_request(req, as_of=as_of), k=req.k)
        response = match_response(
            result,
            state.directory,
            as_of=as_of,
            model_version=state.versions[RANKER],
            request_id=request_id,
            warnings=request_warnings(req),
            positions=state.positions,
        )
        referral_id = req.referral.referral_id
        if referral_id and response.specialists:
            self._log_predictions(
                [
                    {
                        "model": RANKER_MODEL,
                        "model_version": state.versions[RANKER],
                        "subject": referral_id,
                        "item": s.specialist_id,
                        "rank": s.rank,
                        "score": s.score,
                    }
                    for s in response.specialists
                ],
                request_id,
                as_of,
            )
        return response

    def _log_predictions(
        self, rows: list[dict[str, Any]], request_id: str, as_of: datetime
    ) -> None:
        """One bulk insert into the prediction log; a failure is logged (no ids) and the
        request is answered all the same."""
        if not rows:
            return
        at = utcnow()
        for r in rows:
            r.update(at=at, as_of=as_of, request_id=request_id)
        try:
            self.store.log_predictions(rows)
        except Exception as exc:
            log.warning("prediction log write failed (%s)", type(exc).__name__)

    def _log_risk(self, state: RuntimeState, rows: list[RiskRow], request_id: str) -> None:
        """The no-show risk of every scored appointment, and the expected benefit of a call
        (as outreach-uplift rows) where one was estimated."""
        out: list[dict[str, Any]] = [
            {
                "model": NO_SHOW_MODEL,
                "model_version": state.versions[NO_SHOW],
                "subject": r.appointment_id,
                "score": r.risk,
            }
            for r in rows
        ]
        out += [
            {
                "model": UPLIFT_MODEL,
                "model_version": state.versions.get(UPLIFT),
                "subject": r.appointment_id,
                "score": r.expected_benefit,
            }
            for r in rows
            if r.expected_benefit is not None
        ]
        self._log_predictions(out, request_id, self.clock())

    def recommend_body_from_fhir(self, resource: dict[str, Any]) -> dict[str, Any]:
        """A FHIR ServiceRequest (or a Bundle holding one) as a /recommend body; a referenced
        Patient is read from the store. Raises features.fhir_inbound.FhirInputError."""
        from features.fhir_inbound import recommend_from_service_request

        return recommend_from_service_request(
            resource, patient_lookup=self.store.patient, as_of=self.clock()
        )

    def no_show_risk(self, req: NoShowRiskRequest, request_id: str) -> NoShowRiskResponse:
        """Calibrated no-show risk, tier, top factors and action per appointment; the history
        of patients with an id comes from the store (outcomes recorded so far)."""
        state = self.state
        rows = self._risk_rows(state, appointments_frame(req, state.plan_payer_types))
        self._log_risk(state, rows, request_id)
        return NoShowRiskResponse(
            predictions=rows, model_version=state.versions[NO_SHOW], request_id=request_id
        )

    def _risk_rows(self, state: RuntimeState, flat: pd.DataFrame) -> list[RiskRow]:
        """The one scoring path: flat no-show rows (+ the stored history of their patients)
        -> calibrated risk, tier, top factors, recommended action and, with an outreach-uplift
        model, the expected benefit of a call (null where not estimated), in the rows' order."""
        if flat.empty:
            return []
        if "specialist_id" in flat.columns and state.clinics:  # the clinic, as in training
            known = flat["specialist_id"].map(state.clinics)
            given = flat["organization_id"] if "organization_id" in flat.columns else None
            flat = flat.assign(organization_id=known if given is None else given.fillna(known))

        # Every recorded outcome, indexed at load: the history batch scoring reads.
        events = state.feature_history
        predictor = state.predictor
        X = predictor.features(flat, events)
        risk = predictor.predict_matrix(X).clip(0.0, 1.0)
        benefits = None
        uplift = state.uplift
        if uplift is not None:
            UX = X if uplift.same_features(predictor.spec) else uplift.features(flat, events)
            benefit = uplift.expected_benefit(UX, risk)
            if "outreach_call" in flat.columns:
                # Already called: never estimated, even by a bundle whose matrix lacks the call
                called = flat["outreach_call"].astype(float).to_numpy() > 0
                benefit = np.where(called, np.nan, benefit)
            benefits = benefit.tolist()
        return risk_rows(
            [str(i) for i in flat["appointment_id"]],
            risk.tolist(),
            [str(t) for t in predictor.tier(risk)],
            predictor.top_factors(X),
            benefits,
        )

    def worklist(self, req: WorklistRequest, request_id: str) -> WorklistResponse:
        """The outreach worklist: stored upcoming appointments from `start` to `end` (dates,
        both included), scored like /no_show_risk, in `req.order` (highest risk first, or the
        largest expected benefit of a call first: `order_worklist`), at most `capacity` per
        appointment day. Risk and benefit are for offering help (reminders, calls, transport)
        only. order=expected_benefit without an outreach-uplift model: RequestError 409."""
        state = self.state
        if req.order == WorklistOrder.EXPECTED_BENEFIT and state.uplift is None:
            raise RequestError(409, UPLIFT_NOT_LOADED)
        flat = self.store.upcoming_appointments(
            datetime.combine(req.start, time.min),
            datetime.combine(req.end + timedelta(days=1), time.min),  # the store's end is open
            specialty=req.specialty,
            organization_id=req.organization_id,
        )
        flat = flat.drop(columns=["outcome", "outcome_at"]).reset_index(drop=True)
        scored = self._risk_rows(state, flat)
        self._log_risk(state, scored, request_id)
        rows = []
        for r, at, sp in zip(scored, flat["appointment_at"], flat["specialist_id"], strict=True):
            specialist = None if not isinstance(sp, str) or not sp else sp
            name, code = (
                state.directory.get(specialist, (None, None)) if specialist else (None, None)
            )
            rows.append(
                WorklistRow(
                    **r.model_dump(),
                    appointment_at=pd.Timestamp(at).to_pydatetime(),
                    specialist_id=specialist,
                    specialist_name=name,
                    specialty=code,
                )
            )
        per_day: dict[Any, int] = {}
        kept: list[WorklistRow] = []
        for w in order_worklist(rows, req.order):
            day = w.appointment_at.date()
            if per_day.get(day, 0) < req.capacity:
                per_day[day] = per_day.get(day, 0) + 1
                kept.append(w)
        self._add_contacts(kept)
        return WorklistResponse(
            rows=kept,
            model_version=state.versions[NO_SHOW],
            order=req.order,
            uplift_model_version=state.versions.get(UPLIFT),
            request_id=request_id,
        )

    def _add_contacts(self, rows: list[WorklistRow]) -> None:
        """Each row's contact attempts so far and the latest one's time and outcome (so the
        team does not call twice a patient already reached)."""
        log = self.store.contacts([r.appointment_id for r in rows])
        if log.empty:
            return
        by_id = {str(k): g for k, g in log.groupby("appointment_id", sort=False)}
        for r in rows:
            attempts = by_id.get(r.appointment_id)
            if attempts is None:
                continue
            last = attempts.iloc[-1]  # the log is oldest first
            r.contact_attempts = len(attempts)
            r.last_contact_at = pd.Timestamp(last["contacted_at"]).to_pydatetime()
            r.last_contact_outcome = ContactOutcome(str(last["outcome"]))

    def record_contact(
        self, req: ContactRequest, request_id: str, caller: keys.Caller | None = None
    ) -> ContactResponse:
        """Log one outreach attempt with the calling key (RequestError 404 for an appointment
        not in the store)."""
        recorded_at = datetime.now()
        try:
            self.store.record_contact(
                req.appointment_id,
                req.channel,
                req.outcome,
                key_id=caller.key_id if caller is not None else None,
                contacted_at=recorded_at,
                note=req.note,
            )
        except KeyError:
            raise RequestError(404, "no such appointment") from None
        return ContactResponse(
            appointment_id=req.appointment_id, recorded_at=recorded_at, request_id=request_id
        )

    def feedback(self, req: FeedbackRequest, request_id: str) -> FeedbackResponse:
        """Record outcome events (`Store.apply_feedback`: idempotent; unknown ids reported per
        event). The worklist sees an outcome at once; history features after the next load."""
        events = pd.DataFrame([e.model_dump() for e in req.events])
        recorded, duplicates, unknown = self.store.apply_feedback(events)
        return FeedbackResponse(
            recorded=recorded,
            duplicates=duplicates,
            unknown=[
                UnknownEvent(
                    index=i,
                    field="appointment_id"
                    if req.events[i].kind == "appointment"
                    else "referral_id",
                )
                for i in unknown
            ],
            request_id=request_id,
        )

    def monitoring(self, req: MonitoringRequest, request_id: str) -> MonitoringResponse:
        """Live performance from the prediction log and the outcomes fed back
        (`serving.monitoring`); also sets the /metrics gauges."""
        from serving import monitoring

        state = self.state
        try:
            thresholds = monitoring.Thresholds.from_env()
        except ValueError as exc:
            raise RequestError(409, str(exc)) from None
        return monitoring.build_report(
            self.store,
            req,
            today=self.clock().date(),
            request_id=request_id,
            training_auc=training_auc(state),
            rebuild=self._drift_inputs(state),
            thresholds=thresholds,
        )

    def _drift_inputs(self, state: RuntimeState) -> Any:
        """For the drift section: (ids, start, end) -> (reference, the scored appointments'
        rebuilt model matrix), or None without a reference or the drift module."""
        reference = getattr(state.predictor, "reference", None)
        if reference is None:
            return None
        try:
            import features.drift  # noqa: F401
        except ImportError:
            return None

        def rebuild(ids: list[str], start: datetime, end: datetime) -> Any:
            flat = self.store.upcoming_appointments(start, end, include_outcomes=True)
            flat = flat[flat["appointment_id"].astype(str).isin(set(ids))]
            flat = flat.drop(columns=["outcome", "outcome_at"]).reset_index(drop=True)
            if flat.empty:
                return None
            if state.clinics:
                flat = flat.assign(
                    organization_id=flat["organization_id"].fillna(
                        flat["specialist_id"].map(state.clinics)
                    )
                )
            # The history indexed at load, as /no_show_risk reads it (the same features)
            return reference, state.predictor.features(flat, state.feature_history)

        return rebuild

    def reload(self, _req: Any, request_id: str) -> ReloadResponse:
        """Load the bundles and store again (atomic swap); on failure the old models keep
        serving and RequestError says why (409 while still serving, 503 when not ready)."""
        if self.load():
            self.generation = uuid.uuid4().hex
            self.store.set_setting(RELOAD_SETTING, self.generation)  # the other workers follow
        else:
            reason = self.not_ready_reason or "unknown"
            if self.ready:
                raise RequestError(409, f"reload failed, still serving {self.versions()}: {reason}")
            raise RequestError(503, f"reload failed, not ready: {reason}")
        return ReloadResponse(reloaded=True, versions=self.versions(), request_id=request_id)

    def model_info(self, _req: Any, request_id: str) -> ModelInfoResponse:
        return ModelInfoResponse(models=list(self.state.models), request_id=request_id)

    def model_plot(self, req: ModelPlotRequest, request_id: str) -> ModelPlot:
        """One plot of a served model's training run (404 when it was not exported with it)."""
        reports = self.state.reports.get(req.model)
        data = plot_payload(reports, req.name) if reports is not None else None
        if data is None:
            raise RequestError(404, "no such plot for this model")
        return ModelPlot(
            model=req.model,
            name=req.name,
            media_type="image/png",
            data_base64=data,
            request_id=request_id,
        )

    # -- the console ----------------------------------------------------------------------------

    def whoami(self, _req: Any, request_id: str, caller: keys.Caller) -> WhoAmIResponse:
        """The calling key's role (as verified for this request) and the console pages it opens."""
        return WhoAmIResponse(
            key_id=caller.key_id,
            role=caller.role,
            pages=list(PAGES[caller.role]),
            request_id=request_id,
        )

    def catalog(self, _req: Any, request_id: str) -> CatalogResponse:
        """The choices the console's forms offer, as of the last load."""
        return CatalogResponse.model_validate({**self.state.catalog, "request_id": request_id})

    # -- API keys (admin; they work whether or not the models are loaded) -------------------------

    def list_keys(self, _req: Any, request_id: str) -> KeyListResponse:
        """Every key's id, role and dates, oldest first (never a hash or a secret)."""
        rows = [KeyInfo.model_validate(row) for row in keys.list_keys(self.store)]
        return KeyListResponse(keys=rows, request_id=request_id)

    def create_key(self, req: CreateKeyRequest, request_id: str) -> CreatedKey:
        key_id, secret = keys.create_key(self.store, req.role)
        created = next(k for k in keys.list_keys(self.store) if k["key_id"] == key_id)
        return CreatedKey(
            key_id=key_id,
            role=req.role,
            secret=secret,
            created_at=created["created_at"],  # type: ignore[arg-type]
            request_id=request_id,
        )

    def revoke_key(self, req: RevokeKeyRequest, request_id: str) -> RevokedKey:
        """Revoke a key at once (every worker); 404 for no such active key, 409 when it is the
        last active admin key (which would lock administration out of the API)."""
        active = [k for k in keys.list_keys(self.store) if k["revoked_at"] is None]
        target = next((k for k in active if k["key_id"] == req.key_id), None)
        if target is None:
            raise RequestError(404, "no such active key")
        admins = [k for k in active if k["role"] == keys.Role.ADMIN.value]
        if target["role"] == keys.Role.ADMIN.value and len(admins) == 1:
            raise RequestError(
                409, "this is the last active admin key: create another admin key first"
            )
        if not keys.revoke(self.store, req.key_id):
            raise RequestError(404, "no such active key")
        return RevokedKey(key_id=req.key_id, revoked=True, request_id=request_id)

    def versions(self) -> dict[str, str]:
        """The loaded models' versions ({} when not ready)."""
        state = self._state
        return {} if state is None else dict(state.versions)


def training_auc(state: RuntimeState) -> float | None:
    """The no-show model's test AUC at training: its exported reports, else its metadata."""
    reports = state.reports.get("no-show")
    value = reports.metrics.get("model", {}).get("roc_auc") if reports is not None else None
    if value is None:
        meta = state.predictor.metadata
        metrics = meta.get("metrics") if isinstance(meta, Mapping) else None
        test = metrics.get("test") if isinstance(metrics, Mapping) else None
        value = test.get("roc_auc") if isinstance(test, Mapping) else None
    try:
        number = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and np.isfinite(number) else None


def order_worklist(rows: list[WorklistRow], order: WorklistOrder) -> list[WorklistRow]:
    """The rows in worklist order (a new list). "risk": highest risk first. "expected_benefit":
    largest expected benefit first, rows without one after all the others, ties (and the rows
    without) by risk. Then earliest appointment, then id, so the order is total."""
    if order == WorklistOrder.EXPECTED_BENEFIT:
        return sorted(
            rows,
            key=lambda w: (
                w.expected_benefit is None,
                -(w.expected_benefit or 0.0),
                -w.risk,
                w.appointment_at,
                w.appointment_id,
            ),
        )
    return sorted(rows, key=lambda w: (-w.risk, w.appointment_at, w.appointment_id))


def _uplift_inputs(uplift: UpliftPredictor) -> list[str]:
    """What /model_info lists as the uplift model's features: its effect terms (logit-
    interaction, applied to the served no-show risk), else the no-show inputs but the call."""
    if uplift.terms is not None:
        return [n for n in uplift.terms.names if n != "constant"]
    return [c for c in uplift.spec.columns if c != "outreach_call"]


def parse_tiers(text: str) -> dict[str, float]:
    """ "medium=0.2,high=0.4" -> {"medium": 0.2, "high": 0.4}: risks at or above a threshold get
    that tier; 0 < medium < high < 1 required."""
    out: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in ("medium", "high") or name in out:
            raise ValueError('expected "medium=<risk>,high=<risk>"')
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"{name} must be a number") from None
    if set(out) != {"medium", "high"} or not 0 < out["medium"] < out["high"] < 1:
        raise ValueError("both medium and high are needed, with 0 < medium < high < 1")
    return out


def freeze_new_objects() -> None:
    """Collect and freeze what was allocated since the last `settle_heap` and survives (models
    imported late, the server's own set-up): without it a worker's full collections walked
    ~230k such objects, 150-175 ms pauses every ~9 /no_show_risk requests. Cheap: a collection
    without unfreezing walks only the unfrozen objects."""
    gc.collect()
    gc.freeze()


def settle_heap() -> None:
    """Collect, then freeze what survives (the libraries and the loaded state) out of the
    garbage collector's reach: full collections then walk only what requests allocate, instead
    of ~10^6 long-lived objects each time (pauses of 100+ ms under load before; see
    benchmarks/bench_service.py). Unfreezing first lets a reload's old state be freed."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    try:  # and hand back what Arrow's allocator kept from loading (0.6 GB a worker at 500k)
        import pyarrow

        pyarrow.default_memory_pool().release_unused()
    except Exception as exc:  # an allocator without it: memory stays, nothing breaks
        log.debug("arrow memory not released (%s)", type(exc).__name__)


class _LoadError(Exception):
    """One step of `Runtime.load` failed; the message names the bundle or store."""


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
