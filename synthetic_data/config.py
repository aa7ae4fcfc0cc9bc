"""Settings of a simulated world: sizes, time span and seed. Frozen; built at the entry point."""

from __future__ import annotations

from datetime import date
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

GENERATOR_VERSION = "1.0.0"

Size = Literal["small", "medium", "large"]

# Counts per size. Appointments come to about 1.1 per referral.
SIZE_PRESETS: dict[str, dict[str, int]] = {
    "small": {
        "patients": 2_000,
        "specialists": 300,
        "pcps": 60,
        "referrals": 4_000,
        "months": 12,
        "metros": 2,
    },
    "medium": {
        "patients": 50_000,
        "specialists": 3_000,
        "pcps": 800,
        "referrals": 100_000,
        "months": 18,
    },
    "large": {
        "patients": 500_000,
        "specialists": 20_000,
        "pcps": 5_000,
        "referrals": 950_000,
        "months": 18,
    },
}


class WorldConfig(BaseModel):
    """Everything that decides a world's content: the same config gives the same tables."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: Size = "small"
    seed: int = 7
    patients: int = Field(gt=0)
    specialists: int = Field(gt=0)
    pcps: int = Field(gt=0)
    referrals: int = Field(gt=0)
    months: int = Field(gt=0, le=60)
    metros: int = Field(default=5, ge=1, le=5)
    start: date = date(2024, 1, 1)
    # Truth keeps the utility of this many nearest candidates per referral.
    truth_candidates: int = Field(default=40, gt=0)
    # Share of appointments booked >= 2 days ahead that get a randomised outreach call.
    outreach_share: float = Field(default=0.12, ge=0, le=1)

    @property
    def start_time(self) -> np.datetime64:
        """First minute of the simulated history."""
        return np.datetime64(pd.Timestamp(self.start), "m")

    @property
    def as_of(self) -> np.datetime64:
        """The snapshot time: history ends here; later appointments are upcoming."""
        return np.datetime64(pd.Timestamp(self.start) + pd.DateOffset(months=self.months), "m")

    @classmethod
    def for_size(cls, size: Size, seed: int = 7, **overrides: int | None) -> WorldConfig:
        """The preset of a size, with any count overridden."""
        values: dict[str, object] = dict(SIZE_PRESETS[size])
        if size == "large":
            values["truth_candidates"] = 15
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(size=size, seed=seed, **values)  # type: ignore[arg-type]
