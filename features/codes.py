"""Code sets the contract relies on: NUCC taxonomy, ICD-10-CM reasons, NPI check digits."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

ICD10_CM_PATTERN = re.compile(r"^[A-TV-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")
NUCC_PATTERN = re.compile(r"^[0-9]{3}[0-9A-Z]{6}X$")
NPI_PREFIX = "80840"
NPI_PATTERN = re.compile(r"^[0-9]{10}$")


@dataclass(frozen=True)
class Specialty:
    """A specialty the world and the service know, keyed by its NUCC taxonomy code."""

    code: str
    name: str
    related: tuple[str, ...]
    female_share: float
    age_mean: float
    demand_weight: float


@dataclass(frozen=True)
class Reason:
    """A reason for referral: an ICD-10-CM code, its category and a plain-language label."""

    code: str
    category: str
    label: str
    specialty: str


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("features.codesets").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


@cache
def nucc_codes() -> frozenset[str]:
    """Every code of the NUCC Health Care Provider Taxonomy v12.1."""
    return frozenset(r["Code"] for r in _rows("nucc_taxonomy_v12.1.csv"))


@cache
def nucc_names() -> dict[str, str]:
    """NUCC code -> 'Classification: Specialization' display name."""
    out = {}
    for r in _rows("nucc_taxonomy_v12.1.csv"):
        spec = r["Specialization"].strip()
        out[r["Code"]] = f"{r['Classification']}: {spec}" if spec else r["Classification"]
    return out


@cache
def specialties() -> dict[str, Specialty]:
    """The specialties referral-ml models, by NUCC code (a subset of the taxonomy)."""
    out = {}
    for r in _rows("specialties.csv"):
        out[r["specialty"]] = Specialty(
            code=r["specialty"],
            name=r["name"],
            related=tuple(c for c in r["related"].split("|") if c),
            female_share=float(r["female_share"]),
            age_mean=float(r["age_mean"]),
            demand_weight=float(r["demand_weight"]),
        )
    return out


@cache
def reasons() -> dict[str, Reason]:
    """Known reasons for referral by ICD-10-CM code."""
    return {
        r["reason_code"]: Reason(r["reason_code"], r["category"], r["label"], r["specialty"])
        for r in _rows("reasons.csv")
    }


@cache
def focus_labels() -> dict[str, str]:
    """ICD-10 category -> plain-language label, for focus areas and reasons."""
    out: dict[str, str] = {}
    for reason in reasons().values():
        out.setdefault(reason.category, reason.label)
    return out


def icd10_category(code: str) -> str:
    """The three-character ICD-10 category of a code ('I50.9' -> 'I50')."""
    return code[:3]


def is_icd10_cm(code: str) -> bool:
    """True when the text has the shape of an ICD-10-CM code (letter, 2 chars, optional dot part)."""
    return bool(ICD10_CM_PATTERN.match(code))


def npi_check_digit(first_nine: str) -> int:
    """Luhn check digit of an NPI, computed over the prefix 80840 plus the first nine digits."""
    digits = [int(c) for c in NPI_PREFIX + first_nine]
    total = 0
    # Double every second digit counting from the right of the payload (the check digit's left).
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10


def is_valid_npi(npi: str) -> bool:
    """True for a 10-digit NPI whose last digit is the right Luhn check digit."""
    return bool(NPI_PATTERN.match(npi)) and npi_check_digit(npi[:9]) == int(npi[9])


# A specialists row is one practitioner at one location: the first location's row carries the
# NPI, later ones the NPI with a location suffix ("1234567893-2"), as directory imports write.
LOCATION_ID_PATTERN = re.compile(r"^([0-9]{10})(?:-([2-9]|[1-9][0-9]+))?$")


def npi_of(specialist_id: str) -> str:
    """The NPI of a specialist id ("1234567893-2" -> "1234567893"; an NPI is its own)."""
    match = LOCATION_ID_PATTERN.match(specialist_id)
    return match.group(1) if match else specialist_id


def is_valid_specialist_id(specialist_id: str) -> bool:
    """True for an NPI, or an NPI with a location suffix -2, -3, ... (see LOCATION_ID_PATTERN)."""
    match = LOCATION_ID_PATTERN.match(specialist_id)
    return match is not None and is_valid_npi(match.group(1))


def make_npis(rng: np.random.Generator, n: int) -> np.ndarray:
    """n distinct valid NPIs (strings), vectorised: random 9-digit bodies starting with 1 plus check digit."""
    bodies = np.unique(rng.integers(100_000_000, 200_000_000, size=n + n // 10 + 16))
    while len(bodies) < n:
        bodies = np.unique(np.concatenate([bodies, rng.integers(100_000_000, 200_000_000, size=n)]))
    bodies = rng.permutation(bodies)[:n]
    digits = (bodies[:, None] // 10 ** np.arange(8, -1, -1)) % 10  # n x 9, most significant first
    payload = np.hstack([np.tile([8, 0, 8, 4, 0], (n, 1)), digits])  # n x 14
    from_right = payload[:, ::-1]
    doubled = from_right[:, 0::2] * 2
    doubled = np.where(doubled > 9, doubled - 9, doubled)
    total = doubled.sum(axis=1) + from_right[:, 1::2].sum(axis=1)
    check = (10 - total % 10) % 10
    return np.array([f"{b}{c}" for b, c in zip(bodies, check, strict=True)], dtype=object)
