"""Code sets, NPI check digits and distances."""

from __future__ import annotations

import numpy as np
import pytest

from features.codes import (
    icd10_category,
    is_icd10_cm,
    is_valid_npi,
    make_npis,
    npi_check_digit,
    nucc_codes,
    reasons,
    specialties,
)
from features.geo import approx_km, haversine_km

pytestmark = pytest.mark.unit


def test_npi_check_digit_matches_the_cms_worked_example() -> None:
    # Given the example NPI in the CMS NPI check-digit document
    # Then its tenth digit is the Luhn digit over 80840 + the first nine
    assert npi_check_digit("123456789") == 3
    assert is_valid_npi("1234567893")


@pytest.mark.parametrize(
    "bad", ["1234567890", "123456789", "12345678931", "12345a7893", "٠١٢٣٤٥٦٧٨٩"]
)
def test_invalid_npis_are_rejected(bad: str) -> None:
    assert not is_valid_npi(bad)


def test_generated_npis_are_valid_distinct_and_seeded() -> None:
    a = make_npis(np.random.default_rng(3), 5_000)
    b = make_npis(np.random.default_rng(3), 5_000)
    assert all(is_valid_npi(x) for x in a)
    assert len(set(a)) == len(a)
    assert list(a) == list(b)
    # One changed digit breaks the check digit (Luhn catches every single-digit error).
    changed = a[0][:4] + str((int(a[0][4]) + 1) % 10) + a[0][5:]
    assert not is_valid_npi(changed)


def test_code_sets_are_consistent() -> None:
    # Every modelled specialty is a real NUCC code; related codes are modelled too.
    assert len(specialties()) >= 20
    for spec in specialties().values():
        assert spec.code in nucc_codes()
        assert set(spec.related) <= set(specialties())
    # Every reason is an ICD-10-CM-shaped code belonging to a modelled specialty.
    for reason in reasons().values():
        assert is_icd10_cm(reason.code), reason.code
        assert reason.specialty in specialties()
        assert icd10_category(reason.code) == reason.category


def test_icd10_shape_check() -> None:
    assert is_icd10_cm("I50.9") and is_icd10_cm("T78.40XA") and is_icd10_cm("C61")
    assert not is_icd10_cm("50.9") and not is_icd10_cm("U07.1") and not is_icd10_cm("I50.")


def test_haversine_boston_to_chicago() -> None:
    # Boston - Chicago is about 1,367 km great-circle.
    d = haversine_km(42.3601, -71.0589, 41.8781, -87.6298)
    assert 1_355 < float(d) < 1_380


def test_approx_distance_is_close_inside_a_metro() -> None:
    rng = np.random.default_rng(0)
    lat = 41.88 + rng.normal(0, 0.3, 1_000)
    lon = -87.63 + rng.normal(0, 0.3, 1_000)
    exact = haversine_km(41.88, -87.63, lat, lon)
    rough = approx_km(41.88, -87.63, lat, lon)
    assert np.max(np.abs(rough - exact) / np.maximum(exact, 1e-9)) < 0.005


def test_zip_lookups_and_time_zones_offline() -> None:
    from features import zipgeo

    exact = zipgeo.lookup("02139")
    assert exact is not None and exact.state == "MA" and exact.timezone == "America/New_York"
    for spelling in ("02139-1234", "021391234", "2139", "2139.0"):
        assert zipgeo.lookup(spelling) == exact, spelling
    assert zipgeo.lookup("99999") is None and zipgeo.lookup("abcde") is None
    # A ZIP the table lacks takes its prefix's zone when the prefix is in its state: El Paso's
    # 799xx is on Mountain time although most of Texas is Central.
    assert zipgeo.lookup("79900") is None
    assert zipgeo.timezone("79900", "TX") == "America/Denver"
    assert zipgeo.timezone("79900") == "America/Denver"
    # A prefix from another state does not decide: then the state's most common zone.
    assert zipgeo.timezone("99999", "AZ") == "America/Phoenix"
    assert zipgeo.timezone(None, "TX") == "America/Chicago"
    assert zipgeo.timezone(None) is None
