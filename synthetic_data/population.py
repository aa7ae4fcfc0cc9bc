"""Patients: where they live, age, sex, language, coverage, and the latent traits behind behaviour."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.geo import approx_km, haversine_km
from synthetic_data.config import WorldConfig
from synthetic_data.directory import Directory, plan_shares
from synthetic_data.geography import METROS, metro_weights, place

RACES = np.array(["white", "black", "hispanic", "asian", "other"], dtype=object)
AGE_BANDS = (
    (0, 18, 0.18),
    (18, 35, 0.22),
    (35, 50, 0.19),
    (50, 65, 0.20),
    (65, 80, 0.15),
    (80, 96, 0.06),
)


@dataclass
class Population:
    """The patients table plus latent traits (truth) and helpers the simulation needs."""

    patients: pd.DataFrame
    age: np.ndarray
    metro_idx: np.ndarray
    payer_type: np.ndarray
    no_show_propensity: np.ndarray
    transport_barrier: np.ndarray
    prefers_same_sex: np.ndarray
    morbidity: np.ndarray
    pcp_index: np.ndarray  # row in directory.referring_providers


def build_population(
    cfg: WorldConfig, rng: np.random.Generator, directory: Directory
) -> Population:
    """Patients of the world with their coverage and hidden behaviour traits."""
    n = cfg.patients
    metro_idx = rng.choice(len(METROS), size=n, p=metro_weights(cfg.metros))
    lat, lon = place(rng, metro_idx, 0.45, 6.0, 22.0)

    band = rng.choice(len(AGE_BANDS), size=n, p=[b[2] for b in AGE_BANDS])
    lo = np.array([b[0] for b in AGE_BANDS])[band]
    hi = np.array([b[1] for b in AGE_BANDS])[band]
    age = lo + np.floor(rng.random(n) * (hi - lo)).astype(int)
    sex = np.where(rng.random(n) < 0.52, "F", "M")

    race_p = np.array([m.race_shares for m in METROS])[metro_idx]
    race_idx = (race_p.cumsum(axis=1) < rng.random(n)[:, None]).sum(axis=1)
    race = RACES[np.minimum(race_idx, len(RACES) - 1)]
    language = _languages(rng, race, metro_idx)

    payer = _payer_types(rng, age, race, language)
    plan_id = _plans_for(rng, payer)

    # Latent traits: a persistent tendency to miss visits, transport and access barriers.
    propensity = rng.normal(0.0, 1.0, n)
    far = (
        haversine_km(
            lat,
            lon,
            np.array([m.lat for m in METROS])[metro_idx],
            np.array([m.lon for m in METROS])[metro_idx],
        )
        > 25.0
    )
    barrier = np.clip(
        rng.beta(1.5, 3.0, n) + 0.15 * (payer == "medicaid") + 0.10 * far + 0.10 * (age >= 75),
        0.0,
        1.0,
    )
    prefers_same_sex = rng.random(n) < np.where(sex == "F", 0.28, 0.12)
    morbidity = rng.lognormal(0.0, 0.8, n) * (0.5 + age / 45.0)

    pcp_index = _assign_pcps(rng, directory, metro_idx, lat, lon)
    patients = pd.DataFrame(
        {
            "patient_id": [f"PT{i:07d}" for i in range(1, n + 1)],
            "birth_year": cfg.start.year - age,
            "sex": sex,
            "preferred_language": language,
            "latitude": lat.round(6),
            "longitude": lon.round(6),
            "insurance_plan_id": plan_id,
            "race_ethnicity": race,
        }
    )
    return Population(
        patients, age, metro_idx, payer, propensity, barrier, prefers_same_sex, morbidity, pcp_index
    )


def _languages(rng: np.random.Generator, race: np.ndarray, metro_idx: np.ndarray) -> np.ndarray:
    n = len(race)
    u = rng.random(n)
    lang = np.full(n, "en", dtype=object)
    hisp = race == "hispanic"
    lang[hisp & (u < 0.45)] = "es"
    asian = race == "asian"
    asian_lang = np.array(["zh", "vi", "ko", "tl"], dtype=object)[rng.integers(0, 4, n)]
    lang[asian & (u < 0.40)] = asian_lang[asian & (u < 0.40)]
    boston, chicago = metro_idx == 0, metro_idx == 1
    lang[(race == "black") & boston & (u < 0.12)] = "ht"
    lang[(race == "white") & boston & (u < 0.04)] = "pt"
    lang[(race == "white") & chicago & (u < 0.04)] = "pl"
    lang[(race == "other") & (u < 0.15)] = "ar"
    lang[(race == "white") & ~boston & ~chicago & (u < 0.015)] = "ru"
    return lang


def _payer_types(
    rng: np.random.Generator, age: np.ndarray, race: np.ndarray, language: np.ndarray
) -> np.ndarray:
    n = len(age)
    u = rng.random(n)
    medicaid_p = 0.14 + 0.10 * np.isin(race, ["black", "hispanic"]) + 0.08 * (age < 18)
    self_pay_p = 0.05 + 0.08 * (language == "es")
    payer = np.where(
        u < medicaid_p, "medicaid", np.where(u < medicaid_p + self_pay_p, "self_pay", "commercial")
    )
    senior = age >= 65
    v = rng.random(n)
    payer = np.where(
        senior, np.where(v < 0.93, "medicare", np.where(v < 0.96, "medicaid", "commercial")), payer
    )
    return payer.astype(object)


def _plans_for(rng: np.random.Generator, payer: np.ndarray) -> np.ndarray:
    shares = plan_shares()
    from synthetic_data.directory import PLAN_ROWS

    out = np.empty(len(payer), dtype=object)
    for payer_type in ("commercial", "medicare", "medicaid", "self_pay"):
        ids = [r[0] for r in PLAN_ROWS if r[2] == payer_type]
        p = shares[ids].to_numpy()
        mask = payer == payer_type
        out[mask] = np.array(ids, dtype=object)[
            rng.choice(len(ids), size=mask.sum(), p=p / p.sum())
        ]
    return out


def _assign_pcps(
    rng: np.random.Generator,
    directory: Directory,
    metro_idx: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
) -> np.ndarray:
    """Each patient's PCP: a provider at a nearby primary-care practice of their metro."""
    orgs = directory.organizations
    provider_org = directory.pcp_org_index
    org_metro = orgs["metro"].map({m.key: i for i, m in enumerate(METROS)}).to_numpy()
    staffed = np.unique(provider_org)
    # Providers grouped by practice, to pick one at random within the chosen practice.
    by_org = np.argsort(provider_org, kind="stable")
    first = np.searchsorted(provider_org[by_org], staffed, "left")
    count = np.searchsorted(provider_org[by_org], staffed, "right") - first
    out = np.empty(len(lat), dtype=np.int64)
    for m in np.unique(metro_idx):
        local = np.flatnonzero(org_metro[staffed] == m)
        if len(local) == 0:
            local = np.arange(len(staffed))
        olat = orgs["latitude"].to_numpy()[staffed[local]]
        olon = orgs["longitude"].to_numpy()[staffed[local]]
        who = np.flatnonzero(metro_idx == m)
        for chunk in np.array_split(who, max(1, len(who) // 20_000)):
            d = approx_km(lat[chunk, None], lon[chunk, None], olat[None, :], olon[None, :])
            # One of the (up to) five nearest practices, at random.
            k = min(5, d.shape[1])
            nearest = (
                np.argpartition(d, k - 1, axis=1)[:, :k]
                if d.shape[1] > k
                else np.argsort(d, axis=1)
            )
            pick = local[nearest[np.arange(len(chunk)), rng.integers(0, k, len(chunk))]]
            within = np.floor(rng.random(len(chunk)) * count[pick]).astype(np.int64)
            out[chunk] = by_org[first[pick] + within]
    return out
