"""Ranker pair-feature inputs for tests: patients paired with specialist rows."""

from __future__ import annotations

import numpy as np
import pandas as pd


def patient_pairs(patients: pd.DataFrame, specialist_rows: np.ndarray, as_of: str) -> pd.DataFrame:
    """One heart-failure routine referral per patient row, paired with specialist_rows[i]."""
    pt = patients.iloc[: len(specialist_rows)]
    return pd.DataFrame(
        {
            "specialist_row": np.asarray(specialist_rows),
            "as_of": pd.Timestamp(as_of),
            "latitude": pt["latitude"].to_numpy(),
            "longitude": pt["longitude"].to_numpy(),
            "insurance_plan_id": pt["insurance_plan_id"].to_numpy(),
            "reason_code": "I50.9",
            "urgency": "routine",
            "language": pt["preferred_language"].to_numpy(),
            "sex": pt["sex"].to_numpy(),
            "patient_id": pt["patient_id"].to_numpy(),
        }
    )
