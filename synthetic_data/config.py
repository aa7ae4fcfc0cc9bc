"""Settings of a simulated world: sizes, time span, seed and an optional later shifted period.

Frozen; built at the entry point."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

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


MIN_BASE_DAYS = 28  # a shift may start no earlier than four weeks into the world


class NewNetwork(BaseModel):
    """A new commercial plan with its own narrow network, from the shift start on.

    `organization_share` of the specialty practices (all practices of a health system decide
    together) join the network and take the plan; `patient_share` of the commercially insured
    patients move to the plan. Referrals of moved patients then meet fewer in-network
    specialists, and a model sees a plan id it was not trained on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    patient_share: float = Field(default=0.3, gt=0, le=1, allow_inf_nan=False)
    organization_share: float = Field(default=0.35, gt=0, le=1, allow_inf_nan=False)


class Shift(BaseModel):
    """A later period of the same world (patients, specialists, plans) in which something changed.

    The base period runs from the world's `start` to `start` here (by default the end of the
    world's `months`, so the base world is the world without a shift); the later period runs
    `months` months on from there. From the shift start on:

    - `lead_time_scale`: every booking is made that much further ahead (a booking that would
      have waited L days waits about scale x L days, on the same calendars), so waits grow;
    - `no_show_logit`: added to the no-show log-odds of every visit booked in the later period
      (behaviour changed: a model trained before is miscalibrated);
    - `new_network`: a new plan and network appear and some patients move to it (or None).
    The defaults change nothing: the later period is then a plain continuation (a control)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: date | None = None
    months: int = Field(default=6, gt=0, le=36)
    lead_time_scale: float = Field(default=1.0, ge=0.25, le=4.0, allow_inf_nan=False)
    no_show_logit: float = Field(default=0.0, ge=-3.0, le=3.0, allow_inf_nan=False)
    new_network: NewNetwork | None = None


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
    # A later period with a shift (written to later/ next to the base world), or none.
    shift: Shift | None = None

    @model_validator(mode="after")
    def _shift_starts_inside_the_world(self) -> WorldConfig:
        if self.shift is not None and self.shift.start is not None:
            earliest = self.start + timedelta(days=MIN_BASE_DAYS)
            latest = (pd.Timestamp(self.start) + pd.DateOffset(months=60)).date()
            if not earliest <= self.shift.start <= latest:
                raise ValueError(
                    f"the shift start {self.shift.start} must be {MIN_BASE_DAYS} days to 60 "
                    f"months after the world start {self.start}"
                )
        return self

    @property
    def start_time(self) -> np.datetime64:
        """First minute of the simulated history."""
        return np.datetime64(pd.Timestamp(self.start), "m")

    @property
    def months_end(self) -> np.datetime64:
        """The end of `months` months from the start."""
        return np.datetime64(pd.Timestamp(self.start) + pd.DateOffset(months=self.months), "m")

    @property
    def as_of(self) -> np.datetime64:
        """The snapshot time: history ends here; later appointments are upcoming. The shift start
        when one is given, else the end of `months`."""
        if self.shift is not None and self.shift.start is not None:
            return np.datetime64(pd.Timestamp(self.shift.start), "m")
        return self.months_end

    @property
    def history_weeks(self) -> float:
        """Weeks of base history (the capacity practices staff for)."""
        if self.as_of == self.months_end:
            return self.months * 52 / 12
        return float((self.as_of - self.start_time) / np.timedelta64(7, "D"))

    @property
    def later_end(self) -> np.datetime64:
        """The end of the later period (ValueError without a shift)."""
        if self.shift is None:
            raise ValueError("the world has no shift, hence no later period")
        months = pd.DateOffset(months=self.shift.months)
        return np.datetime64(pd.Timestamp(self.as_of) + months, "m")

    @classmethod
    def for_size(
        cls, size: Size, seed: int = 7, shift: Shift | None = None, **overrides: int | None
    ) -> WorldConfig:
        """The preset of a size, with any count overridden, and an optional later shift."""
        values: dict[str, object] = dict(SIZE_PRESETS[size])
        if size == "large":
            values["truth_candidates"] = 15
        values.update({k: v for k, v in overrides.items() if v is not None})
        if shift is not None:
            values["shift"] = shift
        return cls(size=size, seed=seed, **values)  # type: ignore[arg-type]
