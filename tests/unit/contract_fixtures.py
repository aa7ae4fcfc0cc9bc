"""A tiny hand-built dataset that satisfies the data contract (2-5 rows per table)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features import codes, contract

T = pd.Timestamp


def valid_tables(seed: int = 7) -> dict[str, pd.DataFrame]:
    """Every contract table, small and valid: real NPIs, NUCC codes and ICD-10-CM reasons."""
    rng = np.random.default_rng(seed)
    npis = [str(n) for n in codes.make_npis(rng, 5)]
    provider_npis, specialist_npis = npis[:2], npis[2:]
    reasons = codes.reasons()
    cardiology = "207RC0000X"
    dermatology = "207N00000X"
    cardio_reasons = [r.code for r in reasons.values() if r.specialty == cardiology]
    derm_reasons = [r.code for r in reasons.values() if r.specialty == dermatology]

    organizations = pd.DataFrame(
        {
            "organization_id": ["ORG1", "ORG2", "ORG3"],
            "name": ["Harbor Heart Associates", "Back Bay Dermatology", "Dorchester Family Care"],
            "kind": ["specialty_practice", "specialty_practice", "primary_care"],
            "system_id": ["SYS1", None, "SYS1"],
            "metro": ["boston", "boston", "boston"],
            "address_line": ["1 Main St", "22 Beacon St", "300 Adams St"],
            "city": ["Boston", "Boston", "Dorchester"],
            "state": ["MA", "MA", "MA"],
            "postal_code": ["02114", "02116", "02122"],
            "latitude": [42.3611, 42.3503, 42.2906],
            "longitude": [-71.0695, -71.0810, -71.0589],
        }
    )
    plans = pd.DataFrame(
        {
            "insurance_plan_id": ["PLAN1", "PLAN2", "PLAN3"],
            "plan_name": ["Bay State PPO", "MassHealth HMO", "Self pay"],
            "payer_type": ["commercial", "medicaid", "self_pay"],
            "plan_type": ["PPO", "HMO", "NONE"],
            "network_ids": ["NET1|NET2", "NET1", ""],
            "out_of_network_coverage": [True, False, False],
        }
    )
    patients = pd.DataFrame(
        {
            "patient_id": ["PAT1", "PAT2", "PAT3", "PAT4"],
            "birth_year": [1950, 1978, 1991, 2004],
            "sex": ["F", "M", "F", "M"],
            "preferred_language": ["en", "es", "zh", "en"],
            "latitude": [42.30, 42.33, 42.36, 42.28],
            "longitude": [-71.05, -71.10, -71.06, -71.12],
            "insurance_plan_id": ["PLAN1", "PLAN2", "PLAN1", "PLAN3"],
            "race_ethnicity": ["white", "hispanic", "asian", None],
        }
    )
    referring_providers = pd.DataFrame(
        {
            "provider_id": provider_npis,
            "first_name": ["Ana", "Ben"],
            "last_name": ["Silva", "Okafor"],
            "organization_id": ["ORG3", "ORG3"],
        }
    )
    specialists = pd.DataFrame(
        {
            "specialist_id": specialist_npis,
            "first_name": ["Carla", "David", "Elena"],
            "last_name": ["Nguyen", "Kim", "Rossi"],
            "sex": ["F", "M", "F"],
            "languages": ["en|es", "en", "en|zh|vi"],
            "specialty": [cardiology, cardiology, dermatology],
            "focus_codes": ["I50|I48", "", "L40"],
            "organization_id": ["ORG1", "ORG1", "ORG2"],
            "network_ids": ["NET1", "NET1|NET2", ""],
            "accepted_plan_ids": ["PLAN1|PLAN2", "PLAN1", ""],
            "latitude": [42.3611, 42.3611, 42.3503],
            "longitude": [-71.0695, -71.0695, -71.0810],
            "accepting_new_patients": [True, False, True],
            "weekly_capacity": [40, 25, 0],
            "rating": [4.6, None, 3.9],
            "review_count": [120, 0, 15],
        }
    )
    starts = [
        T("2024-03-11 09:00"),
        T("2024-03-12 10:30"),
        T("2024-03-20 14:00"),
        T("2024-03-21 09:00"),
        T("2024-03-22 11:00"),
    ]
    booked = [T("2024-03-02 11:00"), T("2024-03-04 16:00"), T("2024-03-06 08:15")]
    availability = pd.DataFrame(
        {
            "slot_id": ["SLOT1", "SLOT2", "SLOT3", "SLOT4", "SLOT5"],
            "specialist_id": [
                specialist_npis[0],
                specialist_npis[2],
                specialist_npis[0],
                specialist_npis[1],
                specialist_npis[2],
            ],
            "start": starts,
            "end": [s + pd.Timedelta(minutes=30) for s in starts],
            "slot_type": ["routine", "routine", "urgent_hold", "routine", "routine"],
            "status": ["busy", "busy", "busy", "free", "free"],
            "booked_at": [*booked, None, None],
            "appointment_id": ["APT1", "APT2", "APT3", None, None],
        }
    )
    referrals = pd.DataFrame(
        {
            "referral_id": ["REF1", "REF2", "REF3", "REF4"],
            "created_at": [
                T("2024-03-01 09:15"),
                T("2024-03-04 13:40"),
                T("2024-03-05 10:00"),
                T("2024-03-07 15:20"),
            ],
            "patient_id": ["PAT1", "PAT2", "PAT3", "PAT4"],
            # A self-referral has no referring provider.
            "referring_provider_id": [provider_npis[0], None, provider_npis[0], provider_npis[1]],
            "specialty": [cardiology, dermatology, cardiology, dermatology],
            "reason_code": [cardio_reasons[0], derm_reasons[0], cardio_reasons[1], derm_reasons[1]],
            "urgency": ["routine", "routine", "urgent", "routine"],
            "referral_type": ["provider", "self", "provider", "follow_up"],
            "specialist_id": [specialist_npis[0], specialist_npis[2], specialist_npis[0], None],
            "status": ["completed", "completed", "scheduled", "never_scheduled"],
            "status_at": [T("2024-03-11 09:30"), T("2024-03-12 11:00"), booked[2], None],
        }
    )
    appointments = pd.DataFrame(
        {
            "appointment_id": ["APT1", "APT2", "APT3"],
            "referral_id": ["REF1", "REF2", "REF3"],
            "patient_id": ["PAT1", "PAT2", "PAT3"],
            "specialist_id": [specialist_npis[0], specialist_npis[2], specialist_npis[0]],
            "slot_id": ["SLOT1", "SLOT2", "SLOT3"],
            "visit_kind": ["new", "new", "follow_up"],
            "booked_at": booked,
            "appointment_at": starts[:3],
            "text_reminder": [True, False, True],
            "outreach_call": [False, False, True],
            "outcome": ["attended", "no_show", None],
            "outcome_at": [T("2024-03-11 09:30"), T("2024-03-12 11:00"), None],
        }
    )
    tables = {
        "organizations": organizations,
        "plans": plans,
        "patients": patients,
        "referring_providers": referring_providers,
        "specialists": specialists,
        "availability": availability,
        "referrals": referrals,
        "appointments": appointments,
    }
    assert {t: tuple(df.columns) for t, df in tables.items()} == contract.TABLES
    return tables
