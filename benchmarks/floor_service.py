"""The framework floor: a trivial BentoML endpoint on the same configuration as ReferralService.

    bentoml serve benchmarks.floor_service:FloorService --host 127.0.0.1 --port 3001

POST /floor takes any JSON body (parsed by BentoML exactly like /recommend's, no validation,
no auth, no audit) and answers a small dict. What /recommend costs over HTTP beyond this is the
service's own work; what this costs is BentoML + uvicorn + the client. The configuration comes
from `serving.service.SERVICE_CONFIG` (only the name differs), so the two cannot drift.
"""

from __future__ import annotations

import json
import os
from typing import Any, Final

import bentoml

from serving.runtime import settle_heap
from serving.service import SERVICE_CONFIG

# For experiments only (the p99 investigation in bench_service.py's docstring): a JSON object
# merged over the configuration, e.g. '{"threads": 4}' or '{"metrics": {"enabled": false}}'.
ENV_OVERRIDES: Final = "REFERRAL_ML_FLOOR_OVERRIDES"
CONFIG: Final[dict[str, Any]] = {
    **SERVICE_CONFIG,
    "name": "referral_ml_floor",
    **json.loads(os.environ.get(ENV_OVERRIDES) or "{}"),
}


@bentoml.service(**CONFIG)
class FloorService:
    def __init__(self) -> None:
        settle_heap()  # as the service does after loading its models

    @bentoml.api(route="/floor")
    def floor(self, body: Any, /, ctx: bentoml.Context) -> dict[str, Any]:
        ctx.response.status_code = 200
        return {"ok": True}
