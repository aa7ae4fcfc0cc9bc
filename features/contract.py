"""The data contract: the canonical tables, their columns and allowed values.

A dataset is a folder of Parquet files, one per table (``patients.parquet`` ...). Multi-valued
columns (languages, focus areas, networks, accepted plans) are ``|``-joined strings so that the
same contract works for CSV. Timestamps are naive clinic-local wall-clock times.
"""

from __future__ import annotations

from typing import Final

SEP: Final = "|"

SEXES: Final = ("F", "M")
LANGUAGES: Final = ("en", "es", "zh", "vi", "pt", "ht", "ko", "ar", "ru", "pl", "fr", "tl")
RACE_ETHNICITIES: Final = ("white", "black", "hispanic", "asian", "other", "unknown")
PAYER_TYPES: Final = ("commercial", "medicare", "medicaid", "self_pay")
PLAN_TYPES: Final = ("HMO", "PPO", "EPO", "POS", "FFS", "NONE")
URGENCIES: Final = ("routine", "urgent", "stat")
REFERRAL_TYPES: Final = ("provider", "self", "emergency", "second_opinion", "follow_up")
REFERRAL_STATUSES: Final = (
    "sent",
    "scheduled",
    "completed",
    "cancelled",
    "leaked",
    "never_scheduled",
)
SLOT_TYPES: Final = ("routine", "urgent_hold")
SLOT_STATUSES: Final = ("free", "busy")
VISIT_KINDS: Final = ("new", "follow_up")
OUTCOMES: Final = ("attended", "no_show", "cancelled")
ORGANIZATION_KINDS: Final = ("specialty_practice", "primary_care")

# Columns kept for subgroup audits only. They must never reach a model (45 CFR 92.210).
AUDIT_ONLY_COLUMNS: Final = frozenset({"race_ethnicity"})

# Table name -> ordered column names. The pandera schemas in features.schemas give the types.
TABLES: Final[dict[str, tuple[str, ...]]] = {
    "organizations": (
        "organization_id",
        "name",
        "kind",
        "system_id",
        "metro",
        "address_line",
        "city",
        "state",
        "postal_code",
        "latitude",
        "longitude",
    ),
    "plans": (
        "insurance_plan_id",
        "plan_name",
        "payer_type",
        "plan_type",
        "network_ids",
        "out_of_network_coverage",
    ),
    "patients": (
        "patient_id",
        "birth_year",
        "sex",
        "preferred_language",
        "latitude",
        "longitude",
        "insurance_plan_id",
        "race_ethnicity",
    ),
    "referring_providers": (
        "provider_id",
        "first_name",
        "last_name",
        "organization_id",
    ),
    "specialists": (
        "specialist_id",
        "first_name",
        "last_name",
        "sex",
        "languages",
        "specialty",
        "focus_codes",
        "organization_id",
        "network_ids",
        "accepted_plan_ids",
        "latitude",
        "longitude",
        "accepting_new_patients",
        "weekly_capacity",
        "rating",
        "review_count",
    ),
    "availability": (
        "slot_id",
        "specialist_id",
        "start",
        "end",
        "slot_type",
        "status",
        "booked_at",
        "appointment_id",
    ),
    "referrals": (
        "referral_id",
        "created_at",
        "patient_id",
        "referring_provider_id",
        "specialty",
        "reason_code",
        "urgency",
        "referral_type",
        "specialist_id",
        "status",
        "status_at",
    ),
    "appointments": (
        "appointment_id",
        "referral_id",
        "patient_id",
        "specialist_id",
        "slot_id",
        "visit_kind",
        "booked_at",
        "appointment_at",
        "text_reminder",
        "outreach_call",
        "outcome",
        "outcome_at",
    ),
}

TRUTH_TABLES: Final[dict[str, tuple[str, ...]]] = {
    "patients": ("patient_id", "no_show_propensity", "transport_barrier", "prefers_same_sex"),
    "specialists": ("specialist_id", "true_quality"),
    "appointments": (
        "appointment_id",
        "p_no_show_without_outreach",
        "p_no_show_with_outreach",
        "outreach_effect",
    ),
    "match_utility": (
        "referral_id",
        "specialist_id",
        "utility",
        "focus_match",
        "true_quality",
        "distance_km",
        "wait_days",
        "in_network",
        "accepts_plan",
        "language_match",
        "sex_match",
        "continuity",
        "chosen",
    ),
}


def split_multi(value: str | None) -> list[str]:
    """Split a '|'-joined multi-valued cell into its parts ('' and None give [])."""
    if not value:
        return []
    return [part for part in value.split(SEP) if part]
