"""Offline US ZIP code lookups: centroid, city, state and time zone.

Backed by the `zipcodes` package, which ships its ZIP table inside the wheel (no network, no
download at first use). Accepts 5-digit ZIPs and ZIP+4 in either form (``021391234`` or
``02139-1234``); only the first five digits are looked up, as a ZIP+4's centroid is not
published. Unknown or malformed ZIPs give None.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

_ZIP: Final = re.compile(r"^\s*([0-9]{5})(?:-?[0-9]{4})?\s*$")


@dataclass(frozen=True)
class ZipInfo:
    """What the ZIP table says about one 5-digit ZIP code."""

    zip5: str
    latitude: float
    longitude: float
    city: str
    state: str
    timezone: str  # IANA name, e.g. "America/Chicago"; "" when the table has none


def normalise(text: object) -> str | None:
    """The 5-digit ZIP of a 5- or 9-digit ZIP string (or int-like value), else None.

    CMS files sometimes hold ZIPs as numbers, losing leading zeros ("2139" for 02139): 3- and
    4-digit values and 8-digit ZIP+4 values are padded back."""
    if text is None:
        return None
    value = str(text).strip()
    if value.endswith(".0"):
        value = value[:-2]
    digits = value.replace("-", "")
    if digits.isdigit() and len(digits) in (3, 4, 8):
        value = digits.zfill(5 if len(digits) < 5 else 9)
    match = _ZIP.match(value)
    return match.group(1) if match else None


@lru_cache(maxsize=1)
def _table() -> dict[str, ZipInfo]:
    """Every ZIP with coordinates, indexed once (about a second; `zipcodes.matching` would scan
    the whole table on every call)."""
    import zipcodes

    out: dict[str, ZipInfo] = {}
    for row in zipcodes.list_all():
        try:
            zip5, lat, lon = str(row["zip_code"]), float(row["lat"]), float(row["long"])
        except (KeyError, TypeError, ValueError):
            continue
        out.setdefault(
            zip5,
            ZipInfo(
                zip5=zip5,
                latitude=lat,
                longitude=lon,
                city=str(row.get("city") or ""),
                state=str(row.get("state") or ""),
                timezone=str(row.get("timezone") or ""),
            ),
        )
    return out


def _lookup(zip5: str) -> ZipInfo | None:
    return _table().get(zip5)


def warm() -> None:
    """Build the index now (a service calls this at start-up, off the request path)."""
    _table()


def lookup(text: object) -> ZipInfo | None:
    """The ZIP table's entry for a 5- or 9-digit ZIP; None when malformed or unknown."""
    zip5 = normalise(text)
    return None if zip5 is None else _lookup(zip5)


def _most_common_zones(key_of: Callable[[ZipInfo], str]) -> dict[str, str]:
    """The most common time zone among the ZIPs sharing each key (e.g. a 3-digit prefix)."""
    counts: dict[str, Counter[str]] = {}
    for info in _table().values():
        if info.timezone:
            counts.setdefault(key_of(info), Counter())[info.timezone] += 1
    return {key: c.most_common(1)[0][0] for key, c in counts.items()}


@lru_cache(maxsize=1)
def _prefix_zones() -> dict[str, str]:
    return _most_common_zones(lambda info: info.zip5[:3])


@lru_cache(maxsize=1)
def _prefix_state_zones() -> dict[str, str]:
    return _most_common_zones(lambda info: f"{info.zip5[:3]} {info.state}")


@lru_cache(maxsize=1)
def _state_zones() -> dict[str, str]:
    return _most_common_zones(lambda info: info.state)


def timezone(text: object, state: str | None = None) -> str | None:
    """The IANA time zone of a ZIP. For a ZIP the table lacks: that of its 3-digit prefix (a
    prefix lies in one area) when the prefix is in `state` (or no state is given), else the most
    common one of `state`; None when nothing fits."""
    zip5 = normalise(text)
    st = (state or "").strip().upper()
    if zip5 is not None:
        info = _lookup(zip5)
        if info is not None and info.timezone:
            return info.timezone
        by_prefix = _prefix_state_zones().get(f"{zip5[:3]} {st}") if st else None
        if by_prefix is None and not st:
            by_prefix = _prefix_zones().get(zip5[:3])
        if by_prefix is not None:
            return by_prefix
    return _state_zones().get(st)
