"""Expected benefit of an outreach call: the `outreach-uplift` model at scoring time.

The benefit of calling a patient is how much the call lowers the probability that they miss
the visit: `risk - risk_if_called`, in probability points, never below 0 and never above the
risk itself. Training (`training.uplift`) fits it on the appointments whose outreach call was
randomised; this module only scores, so the service and batch jobs load it without sklearn or
MLflow.

A bundle is a plain folder, like the no-show bundle:

    uplift.json         the learner ("logit-interaction", "t-learner" or "dr-learner"), its
                        effect terms (logit-interaction) and the eligibility rule
    mu0.txt, mu1.txt    LightGBM outcome models without / with a call (t-learner only)
    tau.txt             LightGBM model of the benefit itself (dr-learner only)
    feature_spec.json   features.no_show.NoShowFeatureSpec: the no-show features (outreach_call
                        is never an input of the effect: it is the treatment)
    metadata.json       name, version, run, the evaluation headline

Learners, as the bundle applies them (`UpliftPredictor.expected_benefit(X, risk)`):
- logit-interaction: a call shifts the log-odds of a no-show by `g(x) = z(x) . coef`, a few
  interpretable terms (payer, distance, age, lead time, record) fitted over a LightGBM baseline;
  the benefit is `risk - sigmoid(logit(risk) + g(x))` on the served no-show model's risk, so it
  is consistent with the risk shown beside it.
- t-learner: `mu0(x) - mu1(x)`, two LightGBM no-show models, one per arm.
- dr-learner: `tau(x)`, LightGBM regression on doubly robust pseudo-outcomes.

Eligibility: only appointments booked at least `min_lead_days` ahead had a randomised call, so
the effect is not estimated for others (nor for an appointment already called); those rows get
NaN, which the service reports as null.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from features.no_show import FeatureHistory, NoShowFeatureSpec, build_features

LEARNERS: Final = ("logit-interaction", "t-learner", "dr-learner")
BOOSTER_FILES: Final = {"t-learner": ("mu0", "mu1"), "dr-learner": ("tau",)}
UPLIFT_FILE: Final = "uplift.json"
TREATMENT: Final = "outreach_call"
DEFAULT_MIN_LEAD_DAYS: Final = 2.0
_EPS: Final = 1e-6


@dataclass
class EffectTerms:
    """The logit-interaction effect `g(x) = coef[0] + sum(coef[j] * z_j(x))`: numeric columns
    (missing -> `fill`, then standardised), indicators `column == level` and thresholds
    `column >= value`, in that order after the constant."""

    numeric: list[str]
    center: list[float]
    scale: list[float]
    fill: list[float]
    indicators: list[tuple[str, str]]
    thresholds: list[tuple[str, float]]
    coef: list[float]

    @property
    def names(self) -> list[str]:
        """One readable name per coefficient."""
        return [
            "constant",
            *self.numeric,
            *(f"{c} = {v}" for c, v in self.indicators),
            *(f"{c} >= {v:g}" for c, v in self.thresholds),
        ]

    def design(self, X: pd.DataFrame) -> np.ndarray:
        """The terms z(x) for the rows of a no-show model matrix, constant first."""
        n = len(X)
        cols = [np.ones(n)]
        for name, mu, sd, fill in zip(
            self.numeric, self.center, self.scale, self.fill, strict=True
        ):
            v = _numeric(X, name)
            cols.append((np.where(np.isnan(v), fill, v) - mu) / sd)
        for name, level in self.indicators:
            if name not in X:
                cols.append(np.zeros(n))
                continue
            text = X[name].astype("string").to_numpy(dtype=object, na_value=None)
            cols.append((text == level).astype(float))
        for name, value in self.thresholds:
            v = _numeric(X, name)
            cols.append((np.nan_to_num(v, nan=-np.inf) >= value).astype(float))
        return np.column_stack(cols)

    def logit_shift(self, X: pd.DataFrame) -> np.ndarray:
        """How a call moves each row's no-show log-odds (negative: fewer no-shows)."""
        return self.design(X) @ np.asarray(self.coef, dtype=float)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EffectTerms:
        terms = cls(**data)
        terms.indicators = [(str(c), str(v)) for c, v in terms.indicators]
        terms.thresholds = [(str(c), float(v)) for c, v in terms.thresholds]
        widths = (len(terms.center), len(terms.scale), len(terms.fill))
        size = 1 + len(terms.numeric) + len(terms.indicators) + len(terms.thresholds)
        if widths != (len(terms.numeric),) * 3 or len(terms.coef) != size:
            raise ValueError("effect terms and coefficients differ in length")
        if not all(np.isfinite(terms.coef)) or not all(s > 0 for s in terms.scale):
            raise ValueError("effect coefficients must be finite and scales positive")
        return terms


def _numeric(X: pd.DataFrame, name: str) -> np.ndarray:
    if name not in X:
        return np.full(len(X), np.nan)
    return pd.to_numeric(X[name], errors="coerce").to_numpy(dtype=float)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def benefit_from_shift(risk: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """risk - sigmoid(logit(risk) + shift): the risk a log-odds shift removes."""
    p = np.clip(np.asarray(risk, dtype=float), _EPS, 1 - _EPS)
    return p - _sigmoid(np.log(p / (1 - p)) + np.asarray(shift, dtype=float))


@dataclass
class UpliftPredictor:
    """Expected benefit of an outreach call for no-show model rows."""

    kind: str
    spec: NoShowFeatureSpec
    terms: EffectTerms | None = None
    boosters: dict[str, Any] = field(default_factory=dict)  # name -> lightgbm.Booster
    min_lead_days: float = DEFAULT_MIN_LEAD_DAYS
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in LEARNERS:
            raise ValueError(f"unknown uplift learner {self.kind!r}: one of {', '.join(LEARNERS)}")
        if self.kind == "logit-interaction" and self.terms is None:
            raise ValueError("a logit-interaction bundle needs its effect terms")
        missing = [b for b in BOOSTER_FILES.get(self.kind, ()) if b not in self.boosters]
        if missing:
            raise ValueError(f"a {self.kind} bundle needs the models {', '.join(missing)}")

    def features(
        self, flat: pd.DataFrame, events: pd.DataFrame | FeatureHistory | None
    ) -> pd.DataFrame:
        """The model matrix (the no-show features, rebuilt from this bundle's spec)."""
        X, _ = build_features(flat, events, self.spec)
        return X

    def same_features(self, spec: NoShowFeatureSpec) -> bool:
        """Whether a no-show model with `spec` builds exactly this bundle's matrix (then its
        matrix can be reused instead of building it twice)."""
        return spec.to_dict() == self.spec.to_dict()

    def eligible(self, X: pd.DataFrame) -> np.ndarray:
        """Rows whose effect is estimated: booked at least min_lead_days ahead, not called yet."""
        lead = _numeric(X, "lead_days")
        called = _numeric(X, TREATMENT)
        return (lead >= self.min_lead_days) & ~(called > 0)

    def raw_benefit(self, X: pd.DataFrame, risk: np.ndarray) -> np.ndarray:
        """The learner's estimate for every row (no eligibility, no clipping)."""
        if self.kind == "logit-interaction":
            assert self.terms is not None
            return benefit_from_shift(risk, self.terms.logit_shift(X))
        inputs = X.drop(columns=[TREATMENT], errors="ignore")
        if self.kind == "t-learner":
            mu0, mu1 = (self._predict(self.boosters[b], inputs) for b in ("mu0", "mu1"))
            return mu0 - mu1
        return self._predict(self.boosters["tau"], inputs)

    def expected_benefit(self, X: pd.DataFrame, risk: np.ndarray) -> np.ndarray:
        """Risk reduction if called, in [0, risk]; NaN where the effect is not estimated."""
        risk = np.asarray(risk, dtype=float)
        out = np.clip(self.raw_benefit(X, risk), 0.0, np.clip(risk, 0.0, 1.0))
        return np.where(self.eligible(X), out, np.nan)

    @staticmethod
    def _predict(booster: Any, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(booster.predict(X[booster.feature_name()], num_threads=1), dtype=float)

    def describe(self) -> dict[str, Any]:
        """What uplift.json holds."""
        return {
            "kind": self.kind,
            "min_lead_days": self.min_lead_days,
            "terms": None if self.terms is None else self.terms.to_dict(),
        }

    def save(self, directory: Path) -> Path:
        """Write the bundle files into `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / UPLIFT_FILE).write_text(json.dumps(self.describe(), indent=2))
        for name, booster in self.boosters.items():
            booster.save_model(str(directory / f"{name}.txt"))
        (directory / "feature_spec.json").write_text(json.dumps(self.spec.to_dict(), indent=2))
        (directory / "metadata.json").write_text(json.dumps(self.metadata, indent=2, default=str))
        return directory

    @classmethod
    def load(cls, directory: Path) -> UpliftPredictor:
        """Read a bundle; a missing or corrupt file raises ValueError naming the folder."""
        try:
            desc = json.loads((directory / UPLIFT_FILE).read_text())
            spec = NoShowFeatureSpec.from_dict(
                json.loads((directory / "feature_spec.json").read_text())
            )
            meta_path = directory / "metadata.json"
            metadata = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            kind = str(desc["kind"])
            boosters = {}
            if BOOSTER_FILES.get(kind):
                from features.lgb_io import load_booster

                boosters = {b: load_booster(directory / f"{b}.txt") for b in BOOSTER_FILES[kind]}
            terms = EffectTerms.from_dict(desc["terms"]) if desc.get("terms") else None
            return cls(
                kind,
                spec,
                terms,
                boosters,
                float(desc.get("min_lead_days", DEFAULT_MIN_LEAD_DAYS)),
                metadata,
            )
        except Exception as exc:  # OSError, JSON, missing keys, LightGBM: one clear message
            raise ValueError(f"cannot load the uplift bundle in {directory}: {exc}") from exc
