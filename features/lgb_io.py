"""Reading a LightGBM text model safely.

LightGBM aborts the whole process (a C++ abort, not a Python exception) on some truncated text
models, which would take a server worker down with it. A complete text model starts with the
line `tree`, contains `end of trees` and `end of parameters`, and ends with a
`pandas_categorical:<JSON>` line that parses; anything else is refused with a ValueError first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import lightgbm as lgb

_MARKERS: Final = (b"end of trees", b"end of parameters")
_LAST_LINE: Final = b"\npandas_categorical:"


def load_booster(path: Path) -> lgb.Booster:
    """A Booster from a LightGBM text model file; ValueError when it is truncated or foreign."""
    data = Path(path).read_bytes()
    if not _complete(data):
        raise ValueError(f"{Path(path).name} is truncated or not a LightGBM text model")
    return lgb.Booster(model_str=data.decode("utf-8"))


def _complete(data: bytes) -> bool:
    if not data.startswith(b"tree") or not all(m in data for m in _MARKERS):
        return False
    at = data.rfind(_LAST_LINE)
    if at < 0:
        return False
    try:
        json.loads(data[at + len(_LAST_LINE) :])
    except ValueError:
        return False
    return True
