"""The runtime specialist ranker and the matcher that answers one referral.

A trained ranker is saved as a plain directory (a "bundle"), like the no-show model, so training,
batch jobs and the service load the same files without MLflow on the request path:

    model.txt           LightGBM LambdaRank model (higher score = better match)
    feature_spec.json   {"kind": "specialist-ranker", "features": [...]} in model column order
    metadata.json       name, version, label design, windows and anything the trainer records
    reference.json      optional: a sample of the training pairs' features summarised for drift
                        reports (`features.drift.FeatureReference`); bundles from before have none
    trees-*.lleaves.o   optional: the trees compiled for one CPU (`features.compiled`, + .json)

`load(directory, trees=TreeSettings.from_env())` is the serving set-up: compiled trees where
available (`backend` says which) and a bounded thread count for every model call.

`Matcher` holds one directory snapshot (retrieval index + pair-feature context) and a ranker:
retrieval (hard filters) -> pair features -> score -> top k -> reasons for the top k only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.attribution import PathAttribution
from features.codes import npi_of
from features.compiled import CompiledScoring, TreeScorer, TreeSettings
from features.drift import REFERENCE_FILE, FeatureReference
from features.lgb_io import load_booster
from features.ranking import PAIR_FEATURES, RankingContext, request_pair_features
from features.reasons import candidate_from, explain
from features.retrieval import DirectoryIndex, RetrievalRequest, RetrievalResult

SPEC_KIND: Final = "specialist-ranker"
# Up to this many candidates, plain LightGBM scores and attributes all of them in one pred_leaf
# pass (one call instead of two); beyond, it scores them and attributes the top k only: the
# attributions of every row grew with the candidates (248 ms for 20,000, against 20 ms for
# 2,000, in the 2026-12-02 benchmark) while only k of them are read.
ONE_PASS_ROWS: Final = 64


@dataclass
class SpecialistRanker(CompiledScoring):
    """A LambdaRank booster over pair features."""

    booster: lgb.Booster
    features: tuple[str, ...] = PAIR_FEATURES
    metadata: dict[str, Any] = field(default_factory=dict)
    reference: FeatureReference | None = None  # training inputs, for drift (None: older bundle)
    _attribution: PathAttribution | None = field(default=None, init=False, repr=False)
    _scorer: TreeScorer | None = field(default=None, init=False, repr=False)

    TREES_LABEL = "specialist ranker"

    def _tree_columns(self) -> tuple[str, ...] | None:
        return self.features

    def score(self, X: pd.DataFrame) -> np.ndarray:
        """Ranking scores (only their order within a referral means anything)."""
        return self.scorer.raw_score(self._model_input(X))

    def score_and_attribute(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Scores and per-feature path attributions (`features.attribution`, columns in
        `features` order) from one pass over the trees: the LightGBM serving path."""
        return self._attributions().score_and_attribute(self._model_input(X))

    def attribute(self, X: pd.DataFrame) -> np.ndarray:
        """Per-feature path attributions of some rows (the top k, after compiled scoring)."""
        return self._attributions()(self._model_input(X))

    def score_pairs(self, A: np.ndarray) -> np.ndarray:
        """`score` of a (rows, PAIR_FEATURES) float matrix, as `request_pair_features` builds
        it: the serving path, which never builds a frame."""
        return self.scorer.raw_score(self._pair_input(A))

    def score_and_attribute_pairs(self, A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`score_and_attribute` of a (rows, PAIR_FEATURES) float matrix."""
        return self._attributions().score_and_attribute(self._pair_input(A))

    def attribute_pairs(self, A: np.ndarray) -> np.ndarray:
        """`attribute` of a (rows, PAIR_FEATURES) float matrix."""
        return self._attributions()(self._pair_input(A))

    def _pair_input(self, A: np.ndarray) -> np.ndarray:
        """The model's columns (`features`, a subset of PAIR_FEATURES in any order) of a
        PAIR_FEATURES-ordered matrix; the matrix itself when they are all of them, in order."""
        if self.features == PAIR_FEATURES:
            return A
        columns = [PAIR_FEATURES.index(f) for f in self.features]
        return np.ascontiguousarray(A[:, columns])

    def _model_input(self, X: pd.DataFrame) -> pd.DataFrame:
        # A compiled scorer's encoder picks the model's columns by name: selecting them in
        # pandas costs more than scoring a few dozen candidates.
        return X if self.scorer.encoder is not None else X[list(self.features)]

    def _attributions(self) -> PathAttribution:
        if self._attribution is None:
            scorer = self.scorer
            self._attribution = PathAttribution(self.booster, scorer.threads, scorer.encoder)
        return self._attribution

    def save(self, directory: Path) -> Path:
        """Write the bundle files into `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / "model.txt"))
        spec = {"kind": SPEC_KIND, "features": list(self.features)}
        (directory / "feature_spec.json").write_text(json.dumps(spec, indent=2))
        (directory / "metadata.json").write_text(json.dumps(self.metadata, indent=2, default=str))
        if self.reference is not None:
            self.reference.save(directory)
        else:  # never leave a reference of another model behind
            (directory / REFERENCE_FILE).unlink(missing_ok=True)
        return directory

    @classmethod
    def load(cls, directory: Path, trees: TreeSettings | None = None) -> SpecialistRanker:
        """Read a bundle; a missing, corrupt or foreign file raises ValueError naming it. With
        `trees` (the serving set-up), scores with compiled trees where available."""
        try:
            spec = json.loads((directory / "feature_spec.json").read_text())
            if spec.get("kind") != SPEC_KIND:
                raise ValueError(f"feature_spec.json is not a {SPEC_KIND} spec")
            features = tuple(spec["features"])
            unknown = sorted(set(features) - set(PAIR_FEATURES))
            if unknown:
                raise ValueError(f"unknown features {unknown} (this code computes {PAIR_FEATURES})")
            booster = load_booster(directory / "model.txt")
            meta_path = directory / "metadata.json"
            metadata = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            reference = FeatureReference.load(directory)
        except (OSError, ValueError, KeyError, TypeError, lgb.basic.LightGBMError) as exc:
            raise ValueError(f"cannot load the ranker bundle in {directory}: {exc}") from exc
        ranker = cls(booster, features, metadata, reference)
        if trees is not None:
            ranker.use_trees(trees, directory / "model.txt")
        return ranker


@dataclass(frozen=True)
class MatchRequest:
    """One referral as a referral UI sends it (no names; the patient id only for continuity)."""

    latitude: float
    longitude: float
    specialty: str
    reason_code: str
    urgency: str = "routine"
    insurance_plan_id: str | None = None
    language: str = "en"
    sex: str | None = None
    patient_id: str | None = None
    referring_system: str | None = None
    as_of: pd.Timestamp | None = None  # default: now
    allow_out_of_network: bool = False
    max_distance_km: float | None = None
    require_language: bool = False
    require_sex: bool = False
    min_candidates: int = 10

    def retrieval(self) -> RetrievalRequest:
        return RetrievalRequest(
            latitude=self.latitude,
            longitude=self.longitude,
            specialty=self.specialty,
            urgency=self.urgency,
            insurance_plan_id=self.insurance_plan_id,
            allow_out_of_network=self.allow_out_of_network,
            max_distance_km=self.max_distance_km,
            language=self.language,
            require_language=self.require_language,
            sex=self.sex,
            require_sex=self.require_sex,
            min_candidates=self.min_candidates,
        )


@dataclass
class Match:
    """One ranked specialist with what a coordinator needs to read."""

    rank: int
    specialist_id: str
    score: float
    features: dict[str, float]
    reasons: list[str]
    out_of_network: bool
    availability_listed: bool = True  # False: the directory has no schedule for them


@dataclass
class MatchResult:
    """The ranked top k and how retrieval went (for widening a search that came back empty)."""

    matches: list[Match]
    candidates: int
    radius_km: float
    removed_by: dict[str, int]
    empty_reason: str | None
    unknown_plan: bool
    timings_ms: dict[str, float]


class Matcher:
    """Answers referrals against one directory snapshot with one ranker."""

    def __init__(
        self,
        ranker: SpecialistRanker,
        ctx: RankingContext,
        index: DirectoryIndex,
        now: pd.Timestamp | None = None,
    ):
        """`now`: the clock for requests without as_of (default: the wall clock). A synthetic
        world's snapshot time (its manifest's as_of) keeps its slots in the future."""
        if index.n_specialists != len(ctx.specialists):
            raise ValueError("the retrieval index and the feature context differ in specialists")
        self.ranker = ranker
        self.ctx = ctx
        self.index = index
        self.now = now
        sp = ctx.specialists
        self._ids = sp["specialist_id"].astype(str).to_numpy()
        self._rating = sp["rating"].to_numpy(dtype=float, na_value=np.nan)
        # Directory facts the reasons need when a source does not list them (docs/fhir.md).
        self._slots_listed = ctx.arrays.availability_code >= 0
        self._networks_listed = len(index.plan_index) > 0
        self._referral_n = _event_counts(ctx.referral_events, self._ids)
        self._visit_n = _event_counts(ctx.visit_events, self._ids)
        # One practitioner at several locations has one row per location ("NPI", "NPI-2"):
        # a referral gets the practitioner once, at the best-scoring location.
        npi_code, npis = pd.factorize(pd.Series([npi_of(i) for i in self._ids], dtype=object))
        self._npi_code = npi_code.astype(np.int64)
        self._several_locations = len(npis) < len(self._ids)

    @classmethod
    def from_tables(
        cls,
        ranker: SpecialistRanker,
        tables: dict[str, pd.DataFrame],
        now: pd.Timestamp | None = None,
    ) -> Matcher:
        """Build from contract tables: specialists, plans, organizations, availability and,
        when present, appointments and referrals (outcome history for rates and continuity)."""
        ctx = RankingContext.build(
            tables["specialists"],
            tables["plans"],
            tables["organizations"],
            tables["availability"],
            tables.get("appointments"),
            tables.get("referrals"),
        )
        return cls(ranker, ctx, DirectoryIndex(ctx.specialists, tables["plans"]), now)

    def candidate_features(self, req: MatchRequest, found: RetrievalResult) -> pd.DataFrame:
        """The pair features of the retrieved candidates of one request (PAIR_FEATURES
        columns), as a frame (benchmarks, notebooks); `rank` uses `candidate_matrix`."""
        return pd.DataFrame(self.candidate_matrix(req, found), columns=list(PAIR_FEATURES))

    def candidate_matrix(self, req: MatchRequest, found: RetrievalResult) -> np.ndarray:
        """The pair features of the retrieved candidates as a (rows, PAIR_FEATURES) float
        matrix: coded once per request, and no frame (building one, then taking the top k rows
        of it, cost as much as scoring the candidates)."""
        as_of = req.as_of if req.as_of is not None else (self.now or pd.Timestamp.now())
        return request_pair_features(
            self.ctx,
            found.rows,
            as_of=as_of,
            latitude=req.latitude,
            longitude=req.longitude,
            insurance_plan_id=req.insurance_plan_id,
            reason_code=req.reason_code,
            urgency=req.urgency,
            language=req.language,
            sex=req.sex,
            patient_id=req.patient_id,
            referring_system=req.referring_system,
        )

    def recommend(self, req: MatchRequest, k: int = 5, reasons: bool = True) -> MatchResult:
        """The top k specialists for a referral, best first, with reasons for each."""
        t0 = time.perf_counter()
        found = self.index.retrieve(req.retrieval())
        matches, timings = self.rank(req, found, k, reasons)
        return MatchResult(
            matches=matches,
            candidates=len(found.rows),
            radius_km=found.radius_km,
            removed_by=found.removed_by,
            empty_reason=found.empty_reason,
            unknown_plan=found.unknown_plan,
            timings_ms={"retrieval": (time.perf_counter() - t0) * 1e3 - sum(timings.values())}
            | timings,
        )

    def rank(
        self, req: MatchRequest, found: RetrievalResult, k: int = 5, reasons: bool = True
    ) -> tuple[list[Match], dict[str, float]]:
        """Score the retrieved candidates, keep the top k, explain those (and only those)."""
        if len(found.rows) == 0:
            return [], {}
        t1 = time.perf_counter()
        X = self.candidate_matrix(req, found)
        t2 = time.perf_counter()
        attributions = None
        if reasons and self.ranker.backend == "lightgbm" and len(X) <= ONE_PASS_ROWS:
            # LightGBM, few rows: one pred_leaf pass gives every row's score and attributions.
            scores, attributions = self.ranker.score_and_attribute_pairs(X)
        else:  # compiled trees, or many rows: score every row, attribute only the top k below
            scores = self.ranker.score_pairs(X)
        order = np.argsort(-scores, kind="stable")
        if self._several_locations:
            _, first = np.unique(self._npi_code[found.rows[order]], return_index=True)
            order = order[np.sort(first)]
        top = order[:k]
        top_values = X[top]
        contrib = None
        if reasons:
            contrib = (
                attributions[top]
                if attributions is not None
                else self.ranker.attribute_pairs(top_values)
            )
        t3 = time.perf_counter()
        names = list(PAIR_FEATURES)
        matches: list[Match] = []
        for rank, i in enumerate(top, start=1):
            values = dict(zip(names, map(float, top_values[rank - 1]), strict=True))
            spec_row = int(found.rows[i])
            rating = self._rating[spec_row]
            text: list[str] = []
            if contrib is not None:
                cand = candidate_from(
                    values,
                    rating=None if np.isnan(rating) else float(rating),
                    language=req.language,
                    reason_code=req.reason_code,
                    unknown_plan=found.unknown_plan,
                    availability_listed=bool(self._slots_listed[spec_row]),
                    referral_history=int(self._referral_n[spec_row]),
                    visit_history=int(self._visit_n[spec_row]),
                    networks_listed=self._networks_listed,
                )
                text = explain(
                    dict(zip(self.ranker.features, contrib[rank - 1], strict=True)), cand
                )
            matches.append(
                Match(
                    rank=rank,
                    specialist_id=str(self._ids[spec_row]),
                    score=float(scores[i]),
                    features=values,
                    reasons=text,
                    out_of_network=bool(found.out_of_network[i]),
                    availability_listed=bool(self._slots_listed[spec_row]),
                )
            )
        t4 = time.perf_counter()
        return matches, {
            "features": (t2 - t1) * 1e3,
            "scoring": (t3 - t2) * 1e3,
            "reasons": (t4 - t3) * 1e3,
        }


def _event_counts(events: pd.DataFrame, ids: np.ndarray) -> np.ndarray:
    """Outcome events per specialist row (aligned with `ids`)."""
    if events.empty:
        return np.zeros(len(ids), dtype=np.int64)
    counts = events["specialist_id"].astype(str).value_counts()
    return counts.reindex(ids, fill_value=0).to_numpy(dtype=np.int64)
