"""Referrals: who is referred, for what, how urgently, and which specialist the old process picks.

The historical choice is an imperfect policy (habit of the referring practice, proximity, ratings
and partial knowledge of each specialist's clinical focus), not the optimum, so a model can learn
to do better. The true match utility of every candidate is computed alongside for truth/.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.codes import reasons, specialties
from features.contract import LANGUAGES
from features.geo import approx_km, haversine_km
from features.network import network_matrices
from features.ranking import membership
from synthetic_data.config import WorldConfig
from synthetic_data.directory import Directory
from synthetic_data.population import Population

URGENCY_P = {"routine": 0.78, "urgent": 0.17, "stat": 0.05}
TYPE_P = {
    "provider": 0.72,
    "self": 0.09,
    "emergency": 0.06,
    "second_opinion": 0.04,
    "follow_up": 0.09,
}
# True utility weights; documented in the README's world section.
W_FOCUS, W_QUALITY, W_IN_NETWORK, W_ACCEPTS, W_NOT_ACCEPTED = 1.6, 0.7, 1.0, 0.5, -1.5
W_LANGUAGE, W_SEX, W_CONTINUITY = 0.5, 0.4, 0.4
DIST_COST = {"routine": 0.035, "urgent": 0.05, "stat": 0.06}
WAIT_COST = {"routine": 0.03, "urgent": 0.10, "stat": 0.30}


@dataclass
class ReferralDraws:
    """Referrals as drawn, plus per-referral facts of the chosen specialist."""

    frame: pd.DataFrame  # referral columns (no status yet), row i = referral i
    patient_row: np.ndarray
    chosen: np.ndarray  # specialist row chosen by the historical policy
    distance_km: np.ndarray
    in_network: np.ndarray
    accepts_plan: np.ndarray
    focus_match: np.ndarray
    truth_pairs: pd.DataFrame  # referral_row, specialist_row, static utility and components


def draw_referrals(
    cfg: WorldConfig,
    rng: np.random.Generator,
    directory: Directory,
    pop: Population,
    period: tuple[np.datetime64, np.datetime64] | None = None,
    n: int | None = None,
    first_id: int = 1,
) -> pd.DataFrame:
    """The referral rows: time, patient, specialty, reason, urgency, type, referring provider.

    By default cfg.referrals referrals over the base period, numbered from RF00000001; a later
    period passes its (start, end), its count and the first free number."""
    n = cfg.referrals if n is None else n
    t0, t1 = (cfg.start_time, cfg.as_of) if period is None else period
    p = pop.morbidity / pop.morbidity.sum()
    patient_row = rng.choice(len(p), size=n, p=p)
    days = int((t1 - t0) / np.timedelta64(1, "D"))
    day = rng.integers(0, days, n)
    created = pd.Timestamp(t0).to_datetime64() + day.astype("timedelta64[D]")
    weekday = (day + pd.Timestamp(t0).day_of_week) % 7
    # Few referrals are written at weekends: move most of them to the next Monday.
    shift = np.where((weekday >= 5) & (rng.random(n) < 0.85), 7 - weekday, 0)
    minutes = rng.integers(8 * 60, 18 * 60, n)
    created = created + shift.astype("timedelta64[D]") + minutes.astype("timedelta64[m]")
    created = np.minimum(created, t1 - np.timedelta64(1, "h"))

    spec = specialties()
    codes = np.array(list(spec), dtype=object)
    age = pop.age[patient_row].astype(float)
    female = pop.patients["sex"].to_numpy()[patient_row] == "F"
    weight = np.log(np.array([s.demand_weight for s in spec.values()]))[None, :]
    age_mean = np.array([s.age_mean for s in spec.values()])[None, :]
    fshare = np.clip(np.array([s.female_share for s in spec.values()]), 0.001, 0.999)[None, :]
    pick = np.empty(n, dtype=np.int64)
    for part in np.array_split(np.arange(n), max(1, n // 100_000)):
        # Gumbel-max sampling from demand x age fit x sex fit, in chunks to bound memory.
        score = (
            weight
            - ((age[part, None] - age_mean) / 22.0) ** 2
            + np.log(np.where(female[part, None], fshare, 1 - fshare))
            + rng.gumbel(size=(len(part), len(codes)))
        )
        pick[part] = np.argmax(score, axis=1)
    specialty = codes[pick]

    by_spec: dict[str, list[str]] = {}
    for r in reasons().values():
        by_spec.setdefault(r.specialty, []).append(r.code)
    u = rng.random(n)
    reason = np.array(
        [by_spec[s][int(x * len(by_spec[s]))] for s, x in zip(specialty, u, strict=True)],
        dtype=object,
    )

    urgency = rng.choice(list(URGENCY_P), size=n, p=list(URGENCY_P.values()))
    oncology = np.isin(specialty, ["207RH0003X", "207RX0202X"])
    urgency = np.where(oncology & (rng.random(n) < 0.3), "urgent", urgency)
    rtype = rng.choice(list(TYPE_P), size=n, p=list(TYPE_P.values()))
    urgency = np.where(
        (rtype == "emergency") & (urgency == "routine") & (rng.random(n) < 0.6), "urgent", urgency
    )
    pcp = directory.referring_providers["provider_id"].to_numpy()[pop.pcp_index[patient_row]]
    referring = pd.array(np.where(rtype == "self", None, pcp), dtype="string")

    order = np.argsort(created, kind="stable")
    frame = pd.DataFrame(
        {
            "referral_id": [f"RF{i:08d}" for i in range(first_id, first_id + n)],
            "created_at": created[order],
            "patient_id": pop.patients["patient_id"].to_numpy()[patient_row[order]],
            "referring_provider_id": referring[order],
            "specialty": specialty[order],
            "reason_code": reason[order],
            "urgency": urgency[order],
            "referral_type": rtype[order],
        }
    )
    frame["_patient_row"] = patient_row[order]
    return frame


def _pair_hash(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """A fixed pseudo-random number in [0, 1) per (a, b) pair: a practice's lasting habits."""
    h = (
        a.astype(np.uint64) * np.uint64(2654435761)
        + b.astype(np.uint64) * np.uint64(40503)
        + np.uint64(seed)
    ) % np.uint64(2**32)
    h = (h ^ (h >> np.uint64(13))) * np.uint64(1274126177) % np.uint64(2**32)
    return h.astype(np.float64) / 2**32


def choose_specialists(
    cfg: WorldConfig,
    rng: np.random.Generator,
    directory: Directory,
    pop: Population,
    frame: pd.DataFrame,
    before: tuple[pd.DataFrame, np.ndarray] | None = None,
) -> ReferralDraws:
    """Candidates per referral (same metro, specialty or related, accepting), historical choice, truth.

    `before`: the (frame, chosen) of earlier referrals, whom follow-ups and second opinions of
    these referrals remember."""
    specs = directory.specialists
    spec_code = specs["specialty"].to_numpy()
    accepting = specs["accepting_new_patients"].to_numpy()
    in_net_m, accepts_m, plan_index = network_matrices(directory.plans, specs)
    s_lat, s_lon = specs["latitude"].to_numpy(), specs["longitude"].to_numpy()
    s_sex = specs["sex"].to_numpy()
    lang_codes = {lang: i for i, lang in enumerate(LANGUAGES)}
    speaks = membership(specs["languages"], lang_codes)
    cat_codes = {c: i for i, c in enumerate(sorted({r.category for r in reasons().values()}))}
    treats = membership(specs["focus_codes"], cat_codes)
    rating = specs["rating"].fillna(4.0).to_numpy()
    reviews = specs["review_count"].to_numpy()
    quality = directory.true_quality
    org_codes = pd.factorize(specs["organization_id"])[0]
    system_codes, _ = pd.factorize(directory.organizations["system_id"])  # -1 = independent
    org_row = pd.Series(
        np.arange(len(directory.organizations)), index=directory.organizations["organization_id"]
    )
    s_system = system_codes[org_row[specs["organization_id"]].to_numpy()]

    prow = frame["_patient_row"].to_numpy()
    patients = pop.patients
    p_lat, p_lon = patients["latitude"].to_numpy()[prow], patients["longitude"].to_numpy()[prow]
    p_plan = patients["insurance_plan_id"].map(plan_index).to_numpy()[prow]
    p_sex = patients["sex"].to_numpy()[prow]
    p_lang = patients["preferred_language"].to_numpy()[prow]
    p_pref = pop.prefers_same_sex[prow]
    pcp_org = directory.pcp_org_index[pop.pcp_index[prow]]
    pcp_system = system_codes[pcp_org]
    categories = frame["reason_code"].str.slice(0, 3).to_numpy()
    cat_idx = np.array([cat_codes.get(c, -1) for c in categories])
    lang_idx = np.array([lang_codes[x] for x in p_lang])
    non_english = p_lang != "en"
    urgency = frame["urgency"].to_numpy()
    dist_cost = pd.Series(urgency).map(DIST_COST).to_numpy()
    rtype = frame["referral_type"].to_numpy()
    metro = pop.metro_idx[prow]

    n = len(frame)
    k_choice = 40
    chosen = np.full(n, -1, dtype=np.int64)
    second = np.full(n, -1, dtype=np.int64)
    truth_parts = []
    spec_table = specialties()
    groups = (
        pd.DataFrame({"m": metro, "s": frame["specialty"].to_numpy()}).groupby(["m", "s"]).indices
    )
    for (m, code), rows in groups.items():
        allowed = {code, *spec_table[code].related}
        cand = np.flatnonzero(
            (directory.specialist_metro == m) & np.isin(spec_code, list(allowed)) & accepting
        )
        if len(cand) == 0:
            continue
        for chunk in np.array_split(rows, max(1, len(rows) // 4000)):
            if len(cand) > k_choice:
                rough = approx_km(
                    p_lat[chunk, None],
                    p_lon[chunk, None],
                    s_lat[cand][None, :],
                    s_lon[cand][None, :],
                )
                near = np.argpartition(rough, k_choice - 1, axis=1)[:, :k_choice]
            else:
                near = np.broadcast_to(np.arange(len(cand)), (len(chunk), len(cand)))
            sidx = cand[near]  # (rows, k) specialist rows
            dist = haversine_km(p_lat[chunk, None], p_lon[chunk, None], s_lat[sidx], s_lon[sidx])
            r = chunk[:, None]
            in_net = in_net_m[p_plan[r], sidx]
            accepts = accepts_m[p_plan[r], sidx]
            focus = (cat_idx[r] >= 0) & treats[sidx, np.maximum(cat_idx[r], 0)]
            lang = non_english[r] & speaks[sidx, lang_idx[r]]
            sex_match = s_sex[sidx] == p_sex[r]
            habit = _pair_hash(pcp_org[r], org_codes[sidx], cfg.seed)
            same_system = (s_system[sidx] == pcp_system[r]) & (pcp_system[r] >= 0)
            is_self = rtype[r] == "self"
            knows_fit = rng.random((len(chunk), 1)) < 0.45
            score = (
                np.where(is_self, 0.0, 2.4 * habit + 0.8 * same_system)
                - 0.07 * dist
                + np.where(is_self, 0.8, 0.35) * (rating[sidx] - 4.0) * (reviews[sidx] > 0)
                + np.where(is_self, 0.45, 0.25) * np.log1p(reviews[sidx])
                + 1.3 * in_net
                + 0.4 * accepts
                + 0.9 * focus * knows_fit
                + 0.5 * lang
                + 0.5 * sex_match * p_pref[r]
                + rng.gumbel(size=dist.shape)
            )
            if score.shape[1] > 2:
                top2 = np.argpartition(-score, 1, axis=1)[:, :2]
            else:
                top2 = np.argsort(-score, axis=1)[:, :2]
            chosen[chunk] = np.take_along_axis(sidx, top2[:, :1], axis=1)[:, 0]
            second[chunk] = np.take_along_axis(sidx, top2[:, -1:], axis=1)[:, 0]
            static = (
                W_FOCUS * focus
                + W_QUALITY * quality[sidx]
                - dist_cost[r] * dist
                + W_IN_NETWORK * in_net
                + W_ACCEPTS * (accepts & ~in_net)
                + W_NOT_ACCEPTED * ~accepts
                + W_LANGUAGE * lang
                + W_SEX * sex_match * p_pref[r]
            )
            # Truth keeps the nearest candidates (and always the chosen one).
            keep = np.zeros(dist.shape, dtype=bool)
            k_truth = min(cfg.truth_candidates, dist.shape[1])
            nearest = np.argpartition(dist, k_truth - 1, axis=1)[:, :k_truth]
            np.put_along_axis(keep, nearest, True, axis=1)
            keep |= sidx == chosen[chunk][:, None]
            truth_parts.append(
                pd.DataFrame(
                    {
                        "referral_row": np.broadcast_to(r, sidx.shape)[keep],
                        "specialist_row": sidx[keep],
                        "static_utility": static[keep].astype(np.float32),
                        "focus_match": focus[keep],
                        "true_quality": quality[sidx][keep].astype(np.float32),
                        "distance_km": dist[keep].astype(np.float32),
                        "in_network": in_net[keep],
                        "accepts_plan": accepts[keep],
                        "language_match": lang[keep],
                        "sex_match": sex_match[keep],
                    }
                )
            )

    chosen, second = _repeat_visits(frame, chosen, second, before)
    truth = pd.concat(truth_parts, ignore_index=True) if truth_parts else pd.DataFrame()
    has = chosen >= 0
    c = np.where(has, chosen, 0)
    dist_c = np.where(has, haversine_km(p_lat, p_lon, s_lat[c], s_lon[c]), np.nan)
    focus_c = (cat_idx >= 0) & treats[c, np.maximum(cat_idx, 0)] & has
    return ReferralDraws(
        frame=frame,
        patient_row=prow,
        chosen=chosen,
        distance_km=dist_c,
        in_network=in_net_m[p_plan, c] & has,
        accepts_plan=accepts_m[p_plan, c] & has,
        focus_match=focus_c,
        truth_pairs=truth,
    )


def _repeat_visits(
    frame: pd.DataFrame,
    chosen: np.ndarray,
    second: np.ndarray,
    before: tuple[pd.DataFrame, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Follow-up referrals mostly return to the earlier specialist; second opinions go elsewhere."""
    key = pd.DataFrame({"p": frame["patient_id"], "s": frame["specialty"], "c": chosen})
    n_before = 0
    if before is not None:
        earlier, earlier_chosen = before
        n_before = len(earlier)
        past = pd.DataFrame(
            {"p": earlier["patient_id"], "s": earlier["specialty"], "c": earlier_chosen}
        )
        key = pd.concat([past, key], ignore_index=True)
    previous = key.groupby(["p", "s"])["c"].shift(1).fillna(-1).astype(np.int64).to_numpy()
    previous = previous[n_before:]
    rtype = frame["referral_type"].to_numpy()
    rows = n_before + np.arange(len(frame))
    h = _pair_hash(rows, np.zeros(len(frame), dtype=np.int64), 99)
    follow = (rtype == "follow_up") & (previous >= 0) & (h < 0.75)
    chosen = np.where(follow, previous, chosen)
    repeat = (rtype == "second_opinion") & (previous == chosen) & (second >= 0)
    chosen = np.where(repeat, second, chosen)
    return chosen, second
