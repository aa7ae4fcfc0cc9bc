"""The provider side of the world: networks, plans, organizations, specialists and referring PCPs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from faker import Faker

from features.codes import make_npis, reasons, specialties
from features.contract import SEP
from synthetic_data.config import WorldConfig
from synthetic_data.geography import METROS, metro_weights, place

# network id -> share of organizations (or health systems) contracting with it
NETWORKS: dict[str, float] = {
    "NET-A-NARROW": 0.40,
    "NET-A-BROAD": 0.80,
    "NET-B-NARROW": 0.40,
    "NET-B-BROAD": 0.75,
    "NET-C-BROAD": 0.70,
    "NET-MA": 0.60,
    "NET-MCD-1": 0.35,
    "NET-MCD-2": 0.30,
}

# id, name, payer type, plan type, networks, out-of-network coverage, share within payer type
PLAN_ROWS: tuple[tuple[str, str, str, str, str, bool, float], ...] = (
    ("PLN-A-HMO", "Acorn Health HMO", "commercial", "HMO", "NET-A-NARROW", False, 0.14),
    ("PLN-A-PPO", "Acorn Health PPO", "commercial", "PPO", "NET-A-BROAD", True, 0.20),
    ("PLN-B-HMO", "Bluestem Care HMO", "commercial", "HMO", "NET-B-NARROW", False, 0.12),
    ("PLN-B-PPO", "Bluestem Care PPO", "commercial", "PPO", "NET-B-BROAD", True, 0.20),
    ("PLN-B-EPO", "Bluestem Care EPO", "commercial", "EPO", "NET-B-BROAD", False, 0.10),
    ("PLN-C-POS", "Cedar Mutual POS", "commercial", "POS", "NET-C-BROAD", True, 0.10),
    ("PLN-C-PPO", "Cedar Mutual PPO", "commercial", "PPO", "NET-C-BROAD", True, 0.14),
    ("PLN-MCR-FFS", "Original Medicare", "medicare", "FFS", "", False, 0.55),
    ("PLN-MA-HMO", "Silver Years Advantage HMO", "medicare", "HMO", "NET-MA", False, 0.28),
    ("PLN-MA-PPO", "Silver Years Advantage PPO", "medicare", "PPO", "NET-MA", True, 0.17),
    ("PLN-MCD-1", "State Medicaid Plan One", "medicaid", "HMO", "NET-MCD-1", False, 0.55),
    ("PLN-MCD-2", "State Medicaid Plan Two", "medicaid", "HMO", "NET-MCD-2", False, 0.45),
    ("PLN-SELF", "Self-pay", "self_pay", "NONE", "", False, 1.0),
)

SECOND_LANGUAGE = {  # metro -> (language, share of specialists who also speak it)
    "BOS": (("es", 0.06), ("pt", 0.03), ("ht", 0.02), ("zh", 0.03)),
    "CHI": (("es", 0.10), ("pl", 0.03), ("zh", 0.02), ("ar", 0.01)),
    "HOU": (("es", 0.22), ("vi", 0.03), ("zh", 0.02), ("ar", 0.01)),
    "PHX": (("es", 0.18), ("vi", 0.01), ("tl", 0.01)),
    "ATL": (("es", 0.06), ("ko", 0.03), ("vi", 0.02), ("fr", 0.01)),
}


@dataclass
class Directory:
    """The provider-side tables plus the latent facts kept for truth/."""

    plans: pd.DataFrame
    organizations: pd.DataFrame
    specialists: pd.DataFrame
    referring_providers: pd.DataFrame
    true_quality: np.ndarray
    specialist_metro: np.ndarray
    specialist_system: np.ndarray
    pcp_org_index: np.ndarray  # referring provider -> row in organizations


def build_plans() -> pd.DataFrame:
    """The insurance plans of the world (fixed catalogue)."""
    cols = ["insurance_plan_id", "plan_name", "payer_type", "plan_type", "network_ids"]
    rows = [(*r[:5], r[5]) for r in PLAN_ROWS]
    return pd.DataFrame(rows, columns=[*cols, "out_of_network_coverage"])


def plan_shares() -> pd.Series:
    """Share of each plan within its payer type."""
    return pd.Series({r[0]: r[6] for r in PLAN_ROWS})


def _names(fake: Faker, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n (first, last) names drawn from seeded Faker pools; cheap for large n."""
    firsts = np.array(sorted({fake.first_name() for _ in range(600)}), dtype=object)
    lasts = np.array(sorted({fake.last_name() for _ in range(900)}), dtype=object)
    return firsts[rng.integers(0, len(firsts), n)], lasts[rng.integers(0, len(lasts), n)]


def _organizations(
    rng: np.random.Generator, fake: Faker, n: int, kind: str, prefix: str, n_metros: int
) -> pd.DataFrame:
    metro_idx = rng.choice(len(METROS), size=n, p=metro_weights(n_metros))
    urban = 0.6 if kind == "specialty_practice" else 0.45
    lat, lon = place(rng, metro_idx, urban, 5.0, 18.0)
    # Three health systems per metro; a little over half of organizations belong to one.
    in_system = rng.random(n) < 0.55
    system_no = rng.choice(3, size=n, p=[0.45, 0.35, 0.20]) + 1
    metros = np.array([METROS[i].key for i in metro_idx], dtype=object)
    system_id = np.array(
        [
            f"SYS-{m}-{s}" if member else None
            for m, s, member in zip(metros, system_no, in_system, strict=True)
        ],
        dtype=object,
    )
    suffix = {"specialty_practice": "Specialty Associates", "primary_care": "Primary Care"}[kind]
    names = [f"{fake.last_name()} {suffix}" for _ in range(n)]
    streets = [fake.street_address() for _ in range(n)]
    zips = [
        f"{METROS[i].zip3}{z:02d}" for i, z in zip(metro_idx, rng.integers(1, 99, n), strict=True)
    ]
    return pd.DataFrame(
        {
            "organization_id": [f"{prefix}{i + 1:05d}" for i in range(n)],
            "name": names,
            "kind": kind,
            "system_id": pd.array(system_id, dtype="string"),
            "metro": metros,
            "address_line": streets,
            "city": [METROS[i].city for i in metro_idx],
            "state": [METROS[i].state for i in metro_idx],
            "postal_code": zips,
            "latitude": lat.round(6),
            "longitude": lon.round(6),
        }
    )


def _org_networks(rng: np.random.Generator, orgs: pd.DataFrame) -> list[list[str]]:
    """Networks each organization contracts with; members of a health system share its contracts."""
    owners = orgs["system_id"].fillna(orgs["organization_id"]).to_numpy(dtype=object)
    unique_owners = sorted(set(owners))
    draws = {o: [net for net, p in NETWORKS.items() if rng.random() < p] for o in unique_owners}
    return [draws[o] for o in owners]


def build_directory(cfg: WorldConfig, rng: np.random.Generator, fake: Faker) -> Directory:
    """Plans, organizations, specialists and referring providers, all seeded."""
    plans = build_plans()
    spec = specialties()
    codes = np.array(list(spec), dtype=object)
    demand = np.array([s.demand_weight for s in spec.values()])

    n_s = cfg.specialists
    n_orgs = max(4, int(np.ceil(n_s / 4.5)))
    spec_orgs = _organizations(rng, fake, n_orgs, "specialty_practice", "ORG-S", cfg.metros)
    n_pcp_orgs = max(3, int(np.ceil(cfg.pcps / 5)))
    pcp_orgs = _organizations(rng, fake, n_pcp_orgs, "primary_care", "ORG-P", cfg.metros)
    organizations = pd.concat([spec_orgs, pcp_orgs], ignore_index=True)
    org_nets = _org_networks(rng, spec_orgs)

    # Specialists join a practice (larger practices attract more) and sit at its address.
    org_size = rng.lognormal(0.0, 0.7, n_orgs)
    org_of = rng.choice(n_orgs, size=n_s, p=org_size / org_size.sum())
    specialty = codes[rng.choice(len(codes), size=n_s, p=demand / demand.sum())]
    metro_key = spec_orgs["metro"].to_numpy()[org_of]
    system = spec_orgs["system_id"].to_numpy(dtype=object)[org_of]
    lat = spec_orgs["latitude"].to_numpy()[org_of]
    lon = spec_orgs["longitude"].to_numpy()[org_of]

    is_obgyn = np.isin(specialty, ["207V00000X", "207VG0400X"])
    sex = np.where(rng.random(n_s) < np.where(is_obgyn, 0.62, 0.40), "F", "M")
    languages = []
    for m in metro_key:
        langs = ["en"] + [lang for lang, p in SECOND_LANGUAGE[m] if rng.random() < p]
        languages.append(SEP.join(langs))

    categories = {
        code: sorted({r.category for r in reasons().values() if r.specialty == code})
        for code in codes
    }
    k_focus = rng.choice([3, 4, 5, 6], size=n_s, p=[0.30, 0.40, 0.20, 0.10])
    focus = []
    for code, k in zip(specialty, k_focus, strict=True):
        cats = categories[code]
        picked = rng.choice(len(cats), size=min(k, len(cats)), replace=False)
        focus.append(SEP.join(sorted(cats[i] for i in picked)))

    true_quality = rng.normal(0.0, 1.0, n_s)
    no_reviews = rng.random(n_s) < 0.05
    review_count = np.where(
        no_reviews, 0, np.floor(np.exp(rng.normal(2.6 + 0.25 * true_quality, 1.1))).astype(int)
    )
    noise = rng.normal(0.0, 1.0, n_s) * 0.9 / np.sqrt(review_count + 1.0)
    rating = np.clip(4.1 + 0.45 * true_quality + noise, 1.0, 5.0).round(1)
    rating = np.where(review_count == 0, np.nan, rating)

    accepted = _accepted_plans(rng, plans, [org_nets[o] for o in org_of])
    npis = make_npis(rng, n_s + cfg.pcps)
    first, last = _names(fake, rng, n_s + cfg.pcps)

    specialists = pd.DataFrame(
        {
            "specialist_id": npis[:n_s],
            "first_name": first[:n_s],
            "last_name": last[:n_s],
            "sex": sex,
            "languages": languages,
            "specialty": specialty,
            "focus_codes": focus,
            "organization_id": spec_orgs["organization_id"].to_numpy()[org_of],
            "network_ids": [SEP.join(org_nets[o]) for o in org_of],
            "accepted_plan_ids": accepted,
            "latitude": lat,
            "longitude": lon,
            "accepting_new_patients": rng.random(n_s) < 0.9,
            "weekly_capacity": 1,  # set by assign_weekly_capacity once referrals are drawn
            "rating": rating,
            "review_count": review_count,
        }
    )
    pcp_org_index = n_orgs + rng.integers(0, n_pcp_orgs, cfg.pcps)
    referring = pd.DataFrame(
        {
            "provider_id": npis[n_s:],
            "first_name": first[n_s:],
            "last_name": last[n_s:],
            "organization_id": organizations["organization_id"].to_numpy()[pcp_org_index],
        }
    )
    metro_idx = np.array([[m.key for m in METROS].index(k) for k in metro_key])
    return Directory(
        plans=plans,
        organizations=organizations,
        specialists=specialists,
        referring_providers=referring,
        true_quality=true_quality,
        specialist_metro=metro_idx,
        specialist_system=system,
        pcp_org_index=pcp_org_index,
    )


def _accepted_plans(
    rng: np.random.Generator, plans: pd.DataFrame, networks: list[list[str]]
) -> list[str]:
    """Plans each specialist takes: in-network plans, most take Medicare and self-pay, some bill OON."""
    out = []
    plan_nets = list(
        zip(plans["insurance_plan_id"], plans["network_ids"], plans["plan_type"], strict=True)
    )
    oon = set(plans.loc[plans["out_of_network_coverage"], "insurance_plan_id"])
    for nets in networks:
        bills_oon = rng.random() < 0.35
        takes_medicare = rng.random() < 0.92
        ids = []
        for pid, pnets, ptype in plan_nets:
            if (
                (pnets and pnets in nets)
                or (ptype == "FFS" and takes_medicare)
                or ptype == "NONE"
                or (pid in oon and bills_oon)
            ):
                ids.append(pid)
        out.append(SEP.join(ids))
    return out


def assign_weekly_capacity(
    cfg: WorldConfig, rng: np.random.Generator, specialists: pd.DataFrame, chosen: np.ndarray
) -> None:
    """Referral slots a week: practices staff for the referrals that reach them, imperfectly.

    Capacity follows each specialist's share of referrals (plus follow-ups) with headroom and
    lognormal noise, never below one; an under-staffed popular specialist builds a queue.
    """
    weeks = cfg.history_weeks
    demand = np.bincount(chosen[chosen >= 0], minlength=len(specialists)) * 1.3 / weeks
    raw = 1.25 * demand * rng.lognormal(0.0, 0.3, len(specialists))
    specialists["weekly_capacity"] = np.maximum(1, np.round(raw)).astype(int)
