"""Input drift: a reference of the training model matrix, saved with each model, and the population
stability of recent inputs against it.

`FeatureReference.from_matrix(X_train, categorical)` summarises each model input as buckets with
the training share of rows in each:

- numeric: bins cut at the training deciles (numpy's "inverted_cdf" quantiles, so every cut is
  a training value; unique cut points, fewer bins for discrete columns; the outer bins reach
  -inf and +inf; bins are closed on the right: (c[i-1], c[i]]) plus a "missing" bucket (NaN);
- categorical: one bucket per level seen in training (sorted), "other" (a level training never
  saw) and "missing".

`drift_report(reference, X_recent)` compares the recent model matrix with it, per feature:

- PSI, the population stability index: sum over buckets of (a - e) * ln(a / e), with `a` the
  recent and `e` the reference share of a bucket. Both shares are floored at FLOOR (1e-4; not
  renormalised) before the sum, so an empty bucket on either side adds a bounded term instead
  of an infinite one. Status: "stable" below the first threshold (0.1), "moderate" up to the
  second (0.2), "significant" from there. PSI has a noise floor of about (buckets - 1) / rows
  for a sample from the training distribution itself, hence `min_rows`.
- p-value of a chi-square goodness-of-fit test of the recent bucket counts against the
  reference shares (`scipy.stats.chisquare`; expected shares floored at FLOOR and renormalised,
  buckets empty on both sides left out; None when fewer than two buckets remain). With large
  windows it flags shifts too small to matter: PSI sets the status, the p-value is a hint.

The reference JSON (`reference.json` in a model bundle, `to_dict`):

    {"kind": "feature-reference", "version": 1, "rows": <training rows summarised>,
     "bins": 10, "floor": 0.0001,
     "features": {
        "<numeric>": {"type": "numeric", "cuts": [c0, ...], "shares": [<len(cuts) + 1>],
                      "missing": <share>},
        "<categorical>": {"type": "categorical", "levels": ["a", ...], "shares": [...],
                          "other": 0.0, "missing": <share>}}}

Only numpy, pandas and (lazily, for the test) scipy: this module runs inside the service.
Audit-only columns (race/ethnicity) are refused: they are never model inputs, so never part of
a reference.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np
import pandas as pd

from features.contract import AUDIT_ONLY_COLUMNS

REFERENCE_FILE: Final = "reference.json"
KIND: Final = "feature-reference"
FORMAT_VERSION: Final = 1
FLOOR: Final = 1e-4  # share floor in PSI (and of the chi-square's expected shares)
DEFAULT_BINS: Final = 10
DEFAULT_THRESHOLDS: Final = (0.1, 0.2)
DEFAULT_MIN_ROWS: Final = 500
STATUSES: Final = ("stable", "moderate", "significant")
MISSING: Final = "missing"
OTHER: Final = "other"
REFERENCE_SAMPLE: Final = 200_000  # rows summarised at most (a seeded random sample)


@dataclass(frozen=True)
class NumericReference:
    """Decile bins of one numeric input: shares of (-inf, c0], (c0, c1], ..., (c_last, inf)
    and of missing values."""

    cuts: tuple[float, ...]
    shares: tuple[float, ...]
    missing: float

    kind: ClassVar[str] = "numeric"

    def counts(self, values: pd.Series) -> np.ndarray:
        """Rows per bucket: the bins in order, then missing."""
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        nan = np.isnan(x)
        # side="left": a value equal to a cut falls in the bin it closes, (c[i-1], c[i]]
        idx = np.searchsorted(np.asarray(self.cuts, dtype=float), x[~nan], side="left")
        counts = np.bincount(idx, minlength=len(self.cuts) + 1)
        return np.append(counts, nan.sum()).astype(np.int64)

    def labels(self) -> list[str]:
        """Bucket names, as `counts` orders them."""
        c = [f"{v:.4g}" for v in self.cuts]
        if not c:
            return ["all values", MISSING]
        inner = [f"({a}, {b}]" for a, b in itertools.pairwise(c)]
        return [f"<= {c[0]}", *inner, f"> {c[-1]}", MISSING]

    def reference_shares(self) -> np.ndarray:
        return np.array([*self.shares, self.missing], dtype=float)

    @classmethod
    def from_dict(cls, name: str, f: Mapping[str, Any]) -> NumericReference:
        ref = cls(tuple(map(float, f["cuts"])), tuple(map(float, f["shares"])), float(f["missing"]))
        if len(ref.shares) != len(ref.cuts) + 1:
            raise ValueError(f"{name}: {len(ref.shares)} shares for {len(ref.cuts)} cuts")
        return ref

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "cuts": list(self.cuts),
            "shares": list(self.shares),
            "missing": self.missing,
        }


@dataclass(frozen=True)
class CategoricalReference:
    """Shares of the training levels of one categorical input, of unseen levels and of
    missing values."""

    levels: tuple[str, ...]
    shares: tuple[float, ...]
    other: float
    missing: float

    kind: ClassVar[str] = "categorical"

    def counts(self, values: pd.Series) -> np.ndarray:
        """Rows per bucket: the levels in order, then other, then missing."""
        missing = values.isna().to_numpy()
        seen = values[~missing].astype(str)
        code = pd.Index(self.levels).get_indexer(pd.Index(seen.to_numpy()))
        code = np.where(code < 0, len(self.levels), code)  # unseen -> "other"
        counts = np.bincount(code, minlength=len(self.levels) + 1)
        return np.append(counts, missing.sum()).astype(np.int64)

    def labels(self) -> list[str]:
        """Bucket names, as `counts` orders them (a level named like a special bucket is
        quoted)."""
        names = [repr(v) if v in (OTHER, MISSING) else v for v in self.levels]
        return [*names, OTHER, MISSING]

    def reference_shares(self) -> np.ndarray:
        return np.array([*self.shares, self.other, self.missing], dtype=float)

    @classmethod
    def from_dict(cls, name: str, f: Mapping[str, Any]) -> CategoricalReference:
        ref = cls(
            tuple(map(str, f["levels"])),
            tuple(map(float, f["shares"])),
            float(f["other"]),
            float(f["missing"]),
        )
        if len(ref.shares) != len(ref.levels):
            raise ValueError(f"{name}: {len(ref.shares)} shares for {len(ref.levels)} levels")
        return ref

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "levels": list(self.levels),
            "shares": list(self.shares),
            "other": self.other,
            "missing": self.missing,
        }


ColumnReference = NumericReference | CategoricalReference


def _level_counts(values: pd.Series, missing: np.ndarray) -> dict[str, int]:
    """Rows per level (as text) of the values that are not missing. A categorical column is
    counted by its codes, so that only its few levels become text, not every row."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        per_code = np.bincount(values.cat.codes.to_numpy()[~missing], minlength=0)
        counts: dict[str, int] = {}
        for level, k in zip(values.cat.categories[: len(per_code)], per_code, strict=True):
            if k:
                counts[str(level)] = counts.get(str(level), 0) + int(k)
        return counts
    seen = values[~missing].astype(str).value_counts(sort=False)
    return {str(v): int(k) for v, k in seen.items()}


@dataclass(frozen=True)
class FeatureReference:
    """Bucket shares of every column of a training model matrix (see the module docstring)."""

    features: Mapping[str, ColumnReference]
    rows: int
    bins: int = DEFAULT_BINS
    floor: float = FLOOR

    @property
    def columns(self) -> list[str]:
        """The summarised columns, in matrix order."""
        return list(self.features)

    @property
    def categorical(self) -> list[str]:
        """The categorical columns."""
        return [c for c, r in self.features.items() if isinstance(r, CategoricalReference)]

    @classmethod
    def from_matrix(
        cls,
        X: pd.DataFrame,
        categorical: Iterable[str],
        bins: int = DEFAULT_BINS,
        *,
        max_rows: int | None = REFERENCE_SAMPLE,
        seed: int = 0,
    ) -> FeatureReference:
        """The reference of a training matrix. Columns named in `categorical`, and any of a
        non-numeric dtype, are categorical; the others numeric. At most `max_rows` rows are
        summarised (a seeded random sample; None: all)."""
        if bins < 2:
            raise ValueError("bins must be at least 2")
        if len(X) == 0:
            raise ValueError("a feature reference needs at least one training row")
        audit = sorted(AUDIT_ONLY_COLUMNS & set(map(str, X.columns)))
        if audit:
            raise ValueError(f"audit-only columns can never be part of a reference: {audit}")
        if max_rows is not None and len(X) > max_rows:
            keep = np.sort(np.random.default_rng(seed).choice(len(X), max_rows, replace=False))
            X = X.iloc[keep]
        named = set(categorical)
        n = len(X)
        features: dict[str, ColumnReference] = {}
        for col in X.columns:
            s = X[col]
            if col in named or not _is_numeric(s):
                missing = s.isna().to_numpy()
                counts = _level_counts(s, missing)
                levels = sorted(counts)
                features[str(col)] = CategoricalReference(
                    levels=tuple(levels),
                    shares=tuple(float(counts[v]) / n for v in levels),
                    other=0.0,
                    missing=float(missing.sum()) / n,
                )
                continue
            x = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            finite = x[np.isfinite(x)]
            cuts: tuple[float, ...] = ()
            if len(finite):
                # inverted_cdf: cuts are training values (no cut between 0 and 1 of a flag)
                q = np.quantile(finite, np.arange(1, bins) / bins, method="inverted_cdf")
                cuts = tuple(float(v) for v in np.unique(q))
            ref = NumericReference(cuts, (), 0.0)
            shares = ref.counts(pd.Series(x)) / n
            features[str(col)] = NumericReference(
                cuts, tuple(float(v) for v in shares[:-1]), float(shares[-1])
            )
        return cls(features, rows=n, bins=bins)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (finite numbers only)."""
        return {
            "kind": KIND,
            "version": FORMAT_VERSION,
            "rows": self.rows,
            "bins": self.bins,
            "floor": self.floor,
            "features": {name: ref.to_dict() for name, ref in self.features.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureReference:
        """Inverse of to_dict; ValueError on anything else."""
        if data.get("kind") != KIND:
            raise ValueError(f"not a {KIND} document")
        if int(data.get("version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{KIND} version {data['version']} is newer than this code reads")
        features: dict[str, ColumnReference] = {}
        for name, f in data["features"].items():
            if name in AUDIT_ONLY_COLUMNS:
                raise ValueError(f"audit-only column {name!r} in a reference")
            readers = {r.kind: r.from_dict for r in (NumericReference, CategoricalReference)}
            if f.get("type") not in readers:
                raise ValueError(f"{name}: unknown feature type {f.get('type')!r}")
            ref = readers[f["type"]](name, f)
            features[str(name)] = ref
        return cls(
            features,
            rows=int(data["rows"]),
            bins=int(data.get("bins", DEFAULT_BINS)),
            floor=float(data.get("floor", FLOOR)),
        )

    def save(self, directory: Path) -> Path:
        """Write `reference.json` into `directory`; its path."""
        path = Path(directory) / REFERENCE_FILE
        path.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False))
        return path

    @classmethod
    def load(cls, directory: Path) -> FeatureReference | None:
        """`reference.json` of `directory`; None when there is none (bundles from before). A
        corrupt one raises ValueError naming the file."""
        path = Path(directory) / REFERENCE_FILE
        if not path.exists():
            return None
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{REFERENCE_FILE}: {exc}") from exc

    def bucket_counts(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """Rows of `X` per bucket of every reference column (other columns are ignored)."""
        absent = [c for c in self.features if c not in X.columns]
        if absent:
            raise ValueError(f"the matrix lacks reference columns {absent}")
        return {name: ref.counts(X[name]) for name, ref in self.features.items()}


def _is_numeric(s: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)) and not (
        isinstance(s.dtype, pd.CategoricalDtype)
    )


def psi_of(expected: np.ndarray, actual: np.ndarray, floor: float = FLOOR) -> float:
    """Population stability index of two share vectors: sum (a - e) * ln(a / e), each share
    floored at `floor` first (not renormalised)."""
    e = np.maximum(np.asarray(expected, dtype=float), floor)
    a = np.maximum(np.asarray(actual, dtype=float), floor)
    return float(np.sum((a - e) * np.log(a / e)))


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else np.zeros(len(counts))


def psi(reference: FeatureReference, X: pd.DataFrame) -> dict[str, float]:
    """PSI of every reference column of `X` against the reference (floor: `reference.floor`,
    1e-4 by default, on both the reference and the recent share of each bucket)."""
    counts = reference.bucket_counts(X)
    return {
        name: psi_of(ref.reference_shares(), _shares(counts[name]), reference.floor)
        for name, ref in reference.features.items()
    }


def chi_square_p(counts: np.ndarray, expected: np.ndarray, floor: float = FLOOR) -> float | None:
    """p-value of the chi-square goodness of fit of bucket `counts` to `expected` shares
    (floored at `floor`, renormalised); buckets empty on both sides are left out; None when
    fewer than two buckets or no rows remain."""
    from scipy.stats import chisquare

    counts = np.asarray(counts, dtype=float)
    expected = np.asarray(expected, dtype=float)
    keep = (expected > 0) | (counts > 0)
    n = counts.sum()
    if keep.sum() < 2 or n <= 0:
        return None
    e = np.maximum(expected[keep], floor)
    _, p = chisquare(counts[keep], e / e.sum() * n)
    p = float(p)
    return p if math.isfinite(p) else None


def status_of(value: float, thresholds: tuple[float, float] = DEFAULT_THRESHOLDS) -> str:
    """ "stable" below thresholds[0], "moderate" below thresholds[1], else "significant"."""
    low, high = thresholds
    return STATUSES[0] if value < low else STATUSES[1] if value < high else STATUSES[2]


def _checked_thresholds(thresholds: Iterable[float]) -> tuple[float, float]:
    t = tuple(float(v) for v in thresholds)
    if len(t) != 2 or not all(math.isfinite(v) for v in t) or not 0 < t[0] < t[1]:
        raise ValueError(f"thresholds must be two numbers 0 < moderate < significant, not {t}")
    return t[0], t[1]


def drift_report(
    reference: FeatureReference,
    X: pd.DataFrame,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> dict[str, Any]:
    """Per feature PSI, status, chi-square p-value and the bucket shares on both sides, and a
    summary; JSON-ready. ValueError when `X` has fewer than `min_rows` rows or lacks a
    reference column.

        {"features": {name: {"type", "psi", "status", "p_value", "buckets",
                             "reference_shares", "recent_shares", "rows"}},
         "summary": {"status", "worst_feature", "worst_psi", "counts": {status: n},
                     "drifted": [names, worst first], "window_rows", "reference_rows",
                     "thresholds": [moderate, significant], "floor"}}
    """
    t = _checked_thresholds(thresholds)
    n = len(X)
    if n < min_rows:
        raise ValueError(
            f"the recent window has {n} rows; a drift report needs at least {min_rows} "
            "(on fewer, PSI is mostly sampling noise: about (buckets - 1) / rows)"
        )
    counts = reference.bucket_counts(X)
    features: dict[str, Any] = {}
    for name, ref in reference.features.items():
        expected = ref.reference_shares()
        recent = _shares(counts[name])
        value = psi_of(expected, recent, reference.floor)
        features[name] = {
            "type": ref.kind,
            "psi": value,
            "status": status_of(value, t),
            "p_value": chi_square_p(counts[name], expected, reference.floor),
            "buckets": ref.labels(),
            "reference_shares": [float(v) for v in expected],
            "recent_shares": [float(v) for v in recent],
            "rows": int(counts[name].sum()),
        }
    order = sorted(features, key=lambda c: -features[c]["psi"])
    tally = {s: sum(f["status"] == s for f in features.values()) for s in STATUSES}
    worst = order[0] if order else None
    summary = {
        "status": next((s for s in reversed(STATUSES) if tally[s]), STATUSES[0]),
        "worst_feature": worst,
        "worst_psi": features[worst]["psi"] if worst else None,
        "counts": tally,
        "drifted": [c for c in order if features[c]["status"] != STATUSES[0]],
        "window_rows": n,
        "reference_rows": reference.rows,
        "thresholds": list(t),
        "floor": reference.floor,
    }
    return {"features": features, "summary": summary}
