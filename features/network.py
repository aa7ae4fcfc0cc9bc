"""Insurance network rules: is a specialist in the patient's network, does the practice take the plan.

- in_network: the plan and the specialist share a network id; for an open-network plan (no network
  ids: original Medicare, self-pay) any specialist who accepts the plan counts as in network.
- accepts_plan: the plan id is in the specialist's accepted_plan_ids (in-network plans and, for
  plans with out-of-network coverage, the practices that bill out of network).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.contract import split_multi


def network_matrices(
    plans: pd.DataFrame, specialists: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Boolean (plan x specialist) matrices in_network and accepts_plan, and plan id -> row."""
    plan_index = {pid: i for i, pid in enumerate(plans["insurance_plan_id"].tolist())}
    n_plans, n_specs = len(plans), len(specialists)
    accepts = np.zeros((n_plans, n_specs), dtype=bool)
    for j, accepted in enumerate(specialists["accepted_plan_ids"].tolist()):
        for pid in split_multi(accepted):
            row = plan_index.get(pid)
            if row is not None:
                accepts[row, j] = True
    spec_networks = [set(split_multi(v)) for v in specialists["network_ids"].tolist()]
    in_network = np.zeros_like(accepts)
    for i, nets in enumerate(plans["network_ids"].tolist()):
        plan_nets = set(split_multi(nets))
        if not plan_nets:
            in_network[i] = accepts[i]
            continue
        in_network[i] = np.fromiter(
            (bool(plan_nets & s) for s in spec_networks), dtype=bool, count=n_specs
        )
    return in_network, accepts, plan_index
