"""Candidate retrieval: the specialists that pass the hard filters for one referral.

Built once per directory snapshot (``DirectoryIndex(specialists, plans)``), then queried per
request with plain numpy arrays (no DataFrame work and no sklearn/scipy on the hot path).

Filters, applied in this order and each counted in ``RetrievalResult.removed_by``:

1. ``specialty``: the needed NUCC code plus its related codes
   (``features.codes.specialties()[code].related``). A cardiology referral may go to cardiac
   electrophysiology or interventional cardiology, and a referral for either of those may go to
   general cardiology; only the requested code's own ``related`` list is used (not transitively).
   A code that ``specialties()`` does not know matches only itself.
2. ``accepting_new_patients``.
3. ``distance``: great-circle distance (``features.geo.haversine_km``) <= the radius.
4. ``network``: in network for the plan, or the practice accepts the plan. With
   ``allow_out_of_network`` nobody is removed and those who would have been are flagged
   ``out_of_network``. Skipped for an unknown (or missing) plan id: ``unknown_plan`` is set and
   no network claim is made (``in_network``/``accepts_plan``/``out_of_network`` all False).
5. ``language``: speaks ``language`` (only when ``require_language``).
6. ``sex``: specialist sex equals ``sex`` (only when ``require_sex``).

Radius: starts at ``BASE_RADIUS_KM[urgency]`` (stat 15 km, urgent 25 km, routine 40 km: an
urgent patient should not be sent far when a nearer option exists), capped by
``max_distance_km``. While fewer than ``min_candidates`` survive all filters, the radius grows by
``RADIUS_GROWTH`` (x1.5) up to ``min(MAX_RADIUS_KM, max_distance_km)``. So a dense metro keeps the
base radius and a sparse area widens.

Spatial index: the accepting specialists are sorted by (specialty, lat cell, lon cell) with
``CELL_DEG`` (0.1 degree) cells; a radius query does one vectorised ``searchsorted`` per
(specialty, lat cell row) of the bounding box, so it touches only nearby cells of the wanted
specialties. Bounding boxes crossing the antimeridian fall back to the full longitude range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pandas as pd

from features.codes import specialties
from features.contract import split_multi
from features.geo import EARTH_RADIUS_KM
from features.network import network_matrices

BASE_RADIUS_KM: Final[dict[str, float]] = {"stat": 15.0, "urgent": 25.0, "routine": 40.0}
RADIUS_GROWTH: Final = 1.5
MAX_RADIUS_KM: Final = 150.0
CELL_DEG: Final = 0.1
FILTERS: Final = ("specialty", "accepting_new_patients", "distance", "network", "language", "sex")

_N_LAT_CELLS: Final = round(180 / CELL_DEG) + 2
_N_LON_CELLS: Final = round(360 / CELL_DEG) + 2
_LAT_OFFSET: Final = round(90 / CELL_DEG)
_LON_OFFSET: Final = round(180 / CELL_DEG)
_KM_PER_DEG_LAT: Final = EARTH_RADIUS_KM * math.pi / 180.0
_MARGIN_DEG: Final = 1e-6


@dataclass(frozen=True)
class RetrievalRequest:
    """One referral's hard constraints."""

    latitude: float
    longitude: float
    specialty: str
    urgency: str
    insurance_plan_id: str | None
    allow_out_of_network: bool = False
    max_distance_km: float | None = None
    language: str | None = None
    require_language: bool = False
    sex: str | None = None
    require_sex: bool = False
    min_candidates: int = 10


@dataclass
class RetrievalResult:
    """The surviving specialists (row indices into the directory frame), nearest first."""

    rows: np.ndarray
    distance_km: np.ndarray
    in_network: np.ndarray
    accepts_plan: np.ndarray
    out_of_network: np.ndarray
    radius_km: float
    considered: int
    removed_by: dict[str, int] = field(default_factory=dict)
    empty_reason: str | None = None
    unknown_plan: bool = False


def _cell(deg: np.ndarray | float) -> np.ndarray:
    return np.floor(np.asarray(deg, dtype=np.float64) / CELL_DEG).astype(np.int64)


def _key(spec: np.ndarray | int, ilat: np.ndarray | int, ilon: np.ndarray | int) -> np.ndarray:
    """Composite sort key (specialty, lat cell, lon cell) as one int64."""
    spec_a = np.asarray(spec, dtype=np.int64)
    lat_a = np.asarray(ilat, dtype=np.int64) + _LAT_OFFSET
    lon_a = np.asarray(ilon, dtype=np.int64) + _LON_OFFSET
    return (spec_a * _N_LAT_CELLS + lat_a) * _N_LON_CELLS + lon_a


def radius_schedule(urgency: str, max_distance_km: float | None) -> list[float]:
    """The radii tried in turn: urgency base (capped), then x1.5 up to the cap."""
    if urgency not in BASE_RADIUS_KM:
        raise ValueError(f"unknown urgency {urgency!r}; expected one of {sorted(BASE_RADIUS_KM)}")
    cap = MAX_RADIUS_KM if max_distance_km is None else min(MAX_RADIUS_KM, max_distance_km)
    radius = min(BASE_RADIUS_KM[urgency], cap)
    out = [radius]
    while radius < cap:
        radius = min(radius * RADIUS_GROWTH, cap)
        out.append(radius)
    return out


def related_codes(code: str) -> tuple[str, ...]:
    """The code plus its related codes (``specialties()[code].related``), without duplicates."""
    spec = specialties().get(code)
    extra = spec.related if spec is not None else ()
    return tuple(dict.fromkeys((code, *extra)))


class DirectoryIndex:
    """Precomputed numpy view of one directory snapshot for fast candidate retrieval."""

    def __init__(self, specialists: pd.DataFrame, plans: pd.DataFrame) -> None:
        n = len(specialists)
        self.n_specialists = n
        self.latitude = specialists["latitude"].to_numpy(dtype=np.float64, na_value=np.nan)
        self.longitude = specialists["longitude"].to_numpy(dtype=np.float64, na_value=np.nan)
        codes = [str(c) for c in specialists["specialty"].tolist()]
        self.code_to_int: dict[str, int] = {c: i for i, c in enumerate(dict.fromkeys(codes))}
        self.specialty = np.fromiter((self.code_to_int[c] for c in codes), dtype=np.int64, count=n)
        self.accepting = specialists["accepting_new_patients"].to_numpy(dtype=bool, na_value=False)
        n_codes = len(self.code_to_int)
        self.count_specialty = np.bincount(self.specialty, minlength=n_codes)
        self.count_accepting = np.bincount(self.specialty[self.accepting], minlength=n_codes)

        # Language and sex as one boolean mask per value.
        spoken = [split_multi(v) for v in specialists["languages"].tolist()]
        self.language_masks: dict[str, np.ndarray] = {}
        for j, langs in enumerate(spoken):
            for lang in langs:
                mask = self.language_masks.get(lang)
                if mask is None:
                    mask = self.language_masks[lang] = np.zeros(n, dtype=bool)
                mask[j] = True
        sexes = np.asarray([str(s) for s in specialists["sex"].tolist()], dtype=object)
        self.sex_masks: dict[str, np.ndarray] = {
            s: np.asarray(sexes == s, dtype=bool) for s in dict.fromkeys(sexes.tolist())
        }

        self.in_network, self.accepts_plan, self.plan_index = network_matrices(plans, specialists)
        self.in_network = np.ascontiguousarray(self.in_network)
        self.accepts_plan = np.ascontiguousarray(self.accepts_plan)
        self.network_ok = self.in_network | self.accepts_plan

        # Grid over accepting specialists with coordinates, sorted by (specialty, cell).
        grid_rows = np.flatnonzero(
            self.accepting & np.isfinite(self.latitude) & np.isfinite(self.longitude)
        )
        keys = _key(
            self.specialty[grid_rows],
            _cell(self.latitude[grid_rows]),
            _cell(self.longitude[grid_rows]),
        )
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        self._rows = grid_rows[order]
        self._lat_rad = np.radians(self.latitude[self._rows])
        self._lon_rad = np.radians(self.longitude[self._rows])
        self._cos_lat = np.cos(self._lat_rad)
        self._none = np.zeros(n, dtype=bool)
        self._count_specialty: list[int] = self.count_specialty.tolist()
        self._count_accepting: list[int] = self.count_accepting.tolist()

    # -- spatial query ------------------------------------------------------------------------

    def _positions(
        self, spec_ints: np.ndarray, lat: float, lon: float, radius: float
    ) -> np.ndarray:
        """Grid positions of wanted-specialty accepting specialists in the radius's bounding box."""
        dlat = radius / _KM_PER_DEG_LAT + _MARGIN_DEG
        lat_lo = max(math.floor((lat - dlat) / CELL_DEG), -_LAT_OFFSET)
        lat_hi = min(math.floor((lat + dlat) / CELL_DEG), _LAT_OFFSET)
        ang = radius / EARTH_RADIUS_KM
        cos_lat = math.cos(math.radians(lat))
        if abs(lat) + math.degrees(ang) >= 90.0 or math.sin(ang) >= cos_lat:
            lon_lo, lon_hi = -_LON_OFFSET, _LON_OFFSET
        else:
            dlon = math.degrees(math.asin(math.sin(ang) / cos_lat)) + _MARGIN_DEG
            if lon - dlon < -180.0 or lon + dlon > 180.0:
                lon_lo, lon_hi = -_LON_OFFSET, _LON_OFFSET
            else:
                lon_lo = math.floor((lon - dlon) / CELL_DEG)
                lon_hi = math.floor((lon + dlon) / CELL_DEG)
        # Row keys (specialty, lat cell) x (lon cell lo .. hi); 'right' of hi == 'left' of hi + 1.
        row_keys = (
            (spec_ints[:, None] * _N_LAT_CELLS)
            + np.arange(lat_lo + _LAT_OFFSET, lat_hi + _LAT_OFFSET + 1, dtype=np.int64)
        ).ravel() * _N_LON_CELLS
        bounds = np.searchsorted(
            self._keys,
            np.concatenate(
                (row_keys + (lon_lo + _LON_OFFSET), row_keys + (lon_hi + _LON_OFFSET + 1))
            ),
        )
        starts, ends = bounds[: len(row_keys)], bounds[len(row_keys) :]
        lengths = ends - starts
        total = int(lengths.sum())
        if total == 0:
            return _EMPTY_INT
        offsets = np.cumsum(lengths) - lengths
        return np.repeat(starts - offsets, lengths) + np.arange(total, dtype=np.int64)

    def _gather(
        self,
        spec_ints: np.ndarray,
        req: RetrievalRequest,
        radius: float,
        net_ok: np.ndarray | None,
        extra: list[tuple[str, np.ndarray]],
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, np.ndarray]]]:
        """Rows within ``radius`` (wanted specialty, accepting), their distances and the pass
        masks of the later filters (network, language, sex: only those that apply)."""
        if len(spec_ints) == 0:
            return _EMPTY_INT, _EMPTY_FLOAT, []
        pos = self._positions(spec_ints, req.latitude, req.longitude, radius)
        # features.geo.haversine_km, with the grid points' radians and cosines precomputed.
        p1 = math.radians(req.latitude)
        half_dphi = (self._lat_rad[pos] - p1) * 0.5
        half_dlmb = (self._lon_rad[pos] - math.radians(req.longitude)) * 0.5
        a = np.sin(half_dphi) ** 2 + math.cos(p1) * self._cos_lat[pos] * np.sin(half_dlmb) ** 2
        dist = (2 * EARTH_RADIUS_KM) * np.arcsin(np.sqrt(np.minimum(a, 1.0)))  # a >= 0 here
        near = dist <= radius
        rows, dist = self._rows[pos[near]], dist[near]
        masks = [("network", net_ok[rows])] if net_ok is not None else []
        masks += [(name, mask[rows]) for name, mask in extra]
        return rows, dist, masks

    # -- retrieval ----------------------------------------------------------------------------

    def retrieve(self, req: RetrievalRequest) -> RetrievalResult:
        """The specialists passing every hard filter for ``req``, nearest first."""
        schedule = radius_schedule(req.urgency, req.max_distance_km)
        wanted = related_codes(req.specialty)
        spec_list = [self.code_to_int[c] for c in wanted if c in self.code_to_int]
        spec_ints = np.asarray(spec_list, dtype=np.int64)
        n_spec = sum(self._count_specialty[i] for i in spec_list)
        n_acc = sum(self._count_accepting[i] for i in spec_list)

        plan_row = (
            self.plan_index.get(req.insurance_plan_id)
            if req.insurance_plan_id is not None
            else None
        )
        net_ok = None if plan_row is None or req.allow_out_of_network else self.network_ok[plan_row]
        extra: list[tuple[str, np.ndarray]] = []
        if req.require_language:
            extra.append(("language", self.language_masks.get(req.language or "", self._none)))
        if req.require_sex:
            extra.append(("sex", self.sex_masks.get(req.sex or "", self._none)))

        # Base radius first (the common, dense case); if too few survive, gather once at the cap
        # and pick the first radius of the schedule that yields min_candidates.
        radius = schedule[0]
        rows, dist, masks = self._gather(spec_ints, req, radius, net_ok, extra)
        passing = _all(masks, len(rows))
        if int(passing.sum()) < req.min_candidates and len(schedule) > 1:
            rows, dist, masks = self._gather(spec_ints, req, schedule[-1], net_ok, extra)
            passing = _all(masks, len(rows))
            pass_dist = np.sort(dist[passing])
            counts = np.searchsorted(pass_dist, np.asarray(schedule[1:]), side="right")
            enough = np.flatnonzero(counts >= req.min_candidates)
            radius = schedule[1 + int(enough[0])] if len(enough) else schedule[-1]
            if radius < schedule[-1]:
                near = dist <= radius
                rows, dist, passing = rows[near], dist[near], passing[near]
                masks = [(name, m[near]) for name, m in masks]

        removed = dict.fromkeys(FILTERS, 0)
        removed["specialty"] = self.n_specialists - n_spec
        removed["accepting_new_patients"] = n_spec - n_acc
        removed["distance"] = n_acc - len(rows)
        keep = np.ones(len(rows), dtype=bool)
        left = len(rows)
        for name, mask in masks:
            keep &= mask
            now = int(keep.sum())
            removed[name] = left - now
            left = now
        rows, dist = rows[keep], dist[keep]
        order = np.lexsort((rows, dist))
        rows, dist = rows[order], dist[order]
        if plan_row is None:
            in_net = accepts = oon = np.zeros(len(rows), dtype=bool)
        else:
            in_net = self.in_network[plan_row, rows]
            accepts = self.accepts_plan[plan_row, rows]
            oon = ~(in_net | accepts) if req.allow_out_of_network else np.zeros(len(rows), bool)
        result = RetrievalResult(
            rows=rows,
            distance_km=dist,
            in_network=in_net,
            accepts_plan=accepts,
            out_of_network=oon,
            radius_km=float(radius),
            considered=self.n_specialists,
            removed_by=removed,
            unknown_plan=plan_row is None,
        )
        if len(rows) == 0:
            result.empty_reason = self._empty_reason(req, removed, radius)
        return result

    def retrieve_many(self, requests: list[RetrievalRequest]) -> list[RetrievalResult]:
        """``retrieve`` for each request (for training over historical referrals)."""
        return [self.retrieve(r) for r in requests]

    # -- explanations -------------------------------------------------------------------------

    @staticmethod
    def _empty_reason(req: RetrievalRequest, removed: dict[str, int], radius: float) -> str:
        spec = specialties().get(req.specialty)
        who = f"{spec.name} ({req.specialty})" if spec is not None else req.specialty
        where = f"within {radius:.0f} km" if radius >= 10 else f"within {radius:g} km"
        widen = (
            "widen max_distance_km"
            if req.max_distance_km is not None and req.max_distance_km < MAX_RADIUS_KM
            else f"the search already reached the {MAX_RADIUS_KM:.0f} km limit"
        )
        last = next((f for f in reversed(FILTERS) if removed[f] > 0), None)
        if last is None:
            return "the directory has no specialists"
        if last == "specialty":
            return (
                f"no specialist in the directory practises {who} or a related specialty; "
                "check the specialty code"
            )
        if last == "accepting_new_patients":
            return (
                f"no {who} specialist (or related specialty) is accepting new patients; "
                "retry when the directory is refreshed"
            )
        if last == "distance":
            return f"no {who} specialist accepting new patients {where}; {widen}"
        if last == "network":
            return (
                f"no in-network {who} specialist accepting new patients {where}; "
                f"allow out-of-network or {widen}"
            )
        if last == "language":
            return (
                f"no {who} specialist accepting new patients {where} who passes the network "
                f"filter and speaks {req.language!r}; drop require_language or {widen}"
            )
        return (
            f"no {who} specialist of sex {req.sex!r} accepting new patients {where} who passes "
            f"the earlier filters; drop require_sex or {widen}"
        )


_EMPTY_INT: Final = np.empty(0, dtype=np.int64)
_EMPTY_FLOAT: Final = np.empty(0, dtype=np.float64)


def _all(masks: list[tuple[str, np.ndarray]], n: int) -> np.ndarray:
    """Rows passing every mask (all rows when there is none)."""
    out = np.ones(n, dtype=bool)
    for _, mask in masks:
        out &= mask
    return out
