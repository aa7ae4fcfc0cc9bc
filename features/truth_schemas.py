"""Pandera schemas for the ground-truth tables written next to a dataset for evaluation.

These are not part of the data contract: they are light (extra columns allowed, no cross-table
checks) and only ``features.validation.validate_truth_tables`` uses them.
"""

from __future__ import annotations

import pandera.pandas as pa
from pandera.typing import Series

from features.dtypes import StrictBool

_PROBABILITY = {"min_value": 0, "max_value": 1}


class PatientTruth(pa.DataFrameModel):
    """Latent patient traits."""

    patient_id: Series[str] = pa.Field(unique=True)
    no_show_propensity: Series[float]  # a latent score (log-odds scale), not a probability
    transport_barrier: Series[float] = pa.Field(in_range=_PROBABILITY)
    prefers_same_sex: Series[StrictBool]

    class Config:
        name = "truth.patients"
        coerce = True


class SpecialistTruth(pa.DataFrameModel):
    """Latent specialist quality."""

    specialist_id: Series[str] = pa.Field(unique=True)
    true_quality: Series[float]

    class Config:
        name = "truth.specialists"
        coerce = True


class AppointmentTruth(pa.DataFrameModel):
    """True no-show probabilities with and without outreach."""

    appointment_id: Series[str] = pa.Field(unique=True)
    p_no_show_without_outreach: Series[float] = pa.Field(in_range=_PROBABILITY)
    p_no_show_with_outreach: Series[float] = pa.Field(in_range=_PROBABILITY)
    outreach_effect: Series[float] = pa.Field(in_range={"min_value": -1, "max_value": 1})

    class Config:
        name = "truth.appointments"
        coerce = True


class MatchUtilityTruth(pa.DataFrameModel):
    """Per (referral, candidate specialist) utility and its parts; match flags are 0..1."""

    referral_id: Series[str]
    specialist_id: Series[str]
    utility: Series[float]
    focus_match: Series[float] = pa.Field(in_range=_PROBABILITY)
    true_quality: Series[float]
    distance_km: Series[float] = pa.Field(ge=0)
    wait_days: Series[float] = pa.Field(ge=0)
    in_network: Series[float] = pa.Field(in_range=_PROBABILITY)
    accepts_plan: Series[float] = pa.Field(in_range=_PROBABILITY)
    language_match: Series[float] = pa.Field(in_range=_PROBABILITY)
    sex_match: Series[float] = pa.Field(in_range=_PROBABILITY, nullable=True)
    continuity: Series[float] = pa.Field(in_range=_PROBABILITY)
    chosen: Series[StrictBool]

    class Config:
        name = "truth.match_utility"
        coerce = True


TRUTH_SCHEMAS: dict[str, type[pa.DataFrameModel]] = {
    "patients": PatientTruth,
    "specialists": SpecialistTruth,
    "appointments": AppointmentTruth,
    "match_utility": MatchUtilityTruth,
}
