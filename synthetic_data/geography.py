"""US metro areas with their real centre coordinates, and urban/suburban placement around them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.geo import offset_km


@dataclass(frozen=True)
class Metro:
    """A metro area: centre, state, ZIP prefix, population weight and who lives there."""

    key: str
    city: str
    state: str
    lat: float
    lon: float
    zip3: str
    weight: float
    # Shares of white, black, hispanic, asian, other (audit attribute only).
    race_shares: tuple[float, float, float, float, float]


METROS: tuple[Metro, ...] = (
    Metro("BOS", "Boston", "MA", 42.3601, -71.0589, "021", 0.20, (0.66, 0.09, 0.12, 0.09, 0.04)),
    Metro("CHI", "Chicago", "IL", 41.8781, -87.6298, "606", 0.26, (0.50, 0.17, 0.23, 0.07, 0.03)),
    Metro("HOU", "Houston", "TX", 29.7604, -95.3698, "770", 0.22, (0.33, 0.17, 0.38, 0.08, 0.04)),
    Metro("PHX", "Phoenix", "AZ", 33.4484, -112.0740, "850", 0.17, (0.53, 0.06, 0.32, 0.04, 0.05)),
    Metro("ATL", "Atlanta", "GA", 33.7490, -84.3880, "303", 0.15, (0.45, 0.34, 0.11, 0.07, 0.03)),
)

METRO_KEYS = tuple(m.key for m in METROS)


def metro_weights(n_metros: int = len(METROS)) -> np.ndarray:
    """Population weights of the metros (the first n_metros in use), summing to one."""
    w = np.array([m.weight for m in METROS])
    w[n_metros:] = 0.0
    return w / w.sum()


def place(
    rng: np.random.Generator,
    metro_idx: np.ndarray,
    urban_share: float,
    urban_km: float,
    suburban_km: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude around each point's metro centre: a dense core plus a wide ring."""
    n = len(metro_idx)
    centre_lat = np.array([m.lat for m in METROS])[metro_idx]
    centre_lon = np.array([m.lon for m in METROS])[metro_idx]
    urban = rng.random(n) < urban_share
    sigma = np.where(urban, urban_km, suburban_km)
    north = rng.normal(0.0, 1.0, n) * sigma
    east = rng.normal(0.0, 1.0, n) * sigma
    # Keep everyone within ~70 km of the centre (a commuting region).
    r = np.hypot(north, east)
    shrink = np.where(r > 70.0, 70.0 / np.maximum(r, 1e-9), 1.0)
    return offset_km(centre_lat, centre_lon, north * shrink, east * shrink)
