"""Generate a whole world: directory, patients, referrals, calendars, visits, truth and manifest."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from faker import Faker

from features.availability import NextAvailableIndex
from features.contract import TABLES
from synthetic_data.calibration import calibration_table
from synthetic_data.config import GENERATOR_VERSION, WorldConfig
from synthetic_data.directory import Directory, assign_weekly_capacity, build_directory
from synthetic_data.population import Population, build_population
from synthetic_data.referrals import (
    W_CONTINUITY,
    WAIT_COST,
    ReferralDraws,
    choose_specialists,
    draw_referrals,
)
from synthetic_data.scheduling import SlotBook
from synthetic_data.simulate import Funnel, run_funnel

Reporter = Callable[[str, float], None]
LARGE_PARTITION_ROWS = 250_000  # rows per Parquet row group (a Dask partition) of a large world


def content_hash(df: pd.DataFrame) -> str:
    """SHA-256 of a table's content (values and column names), independent of the file encoding."""
    h = hashlib.sha256(",".join(df.columns).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


@contextmanager
def _stage(name: str, report: Reporter | None) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    if report:
        report(name, time.perf_counter() - t0)


@dataclass
class BaseRun:
    """A simulated base world: its tables and truth, and the simulation state a later period
    continues from (synthetic_data.later)."""

    directory: Directory
    pop: Population
    draws: ReferralDraws
    book: SlotBook
    funnel: Funnel
    appointments: pd.DataFrame  # internal rows in appointment id order
    appointment_ids: np.ndarray
    tables: dict[str, pd.DataFrame]
    truth: dict[str, pd.DataFrame]


def build_world(
    cfg: WorldConfig, report: Reporter | None = None
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """All public tables and all truth tables of a world (the base period), in memory."""
    run = simulate_world(cfg, report)
    return run.tables, run.truth


def simulate_world(cfg: WorldConfig, report: Reporter | None = None) -> BaseRun:
    """Simulate the base period of a world: its tables, truth and final simulation state."""
    rng = np.random.default_rng(cfg.seed)
    fake = Faker("en_US")
    fake.seed_instance(cfg.seed)
    start, end = cfg.start_time, cfg.as_of
    with _stage("directory: plans, organizations, specialists", report):
        directory = build_directory(cfg, rng, fake)
    with _stage("patients", report):
        pop = build_population(cfg, rng, directory)
    with _stage("referrals and the historical choice", report):
        frame = draw_referrals(cfg, rng, directory, pop)
        draws = choose_specialists(cfg, rng, directory, pop, frame)
        assign_weekly_capacity(cfg, rng, directory.specialists, draws.chosen)
    with _stage("calendars, scheduling, visits and outcomes", report):
        book = SlotBook(
            rng,
            directory.specialists["weekly_capacity"].to_numpy(),
            start,
            end + np.timedelta64(84, "D"),
        )
        funnel = run_funnel(cfg, rng, directory, pop, draws, book)
    with _stage("assembling tables and truth", report):
        ap, ap_ids = ordered_appointments(funnel.appointments, 1)
        tables, truth = _assemble(directory, pop, draws, book, funnel, ap, ap_ids, end)
    return BaseRun(directory, pop, draws, book, funnel, ap, ap_ids, tables, truth)


def ordered_appointments(
    appointments: pd.DataFrame, first_id: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """Appointments in id order (booking time, then owner) and their ids from AP`first_id`."""
    ap = appointments.sort_values(["booked_at", "owner"], kind="stable").reset_index(drop=True)
    ids = np.array([f"AP{i:08d}" for i in range(first_id, first_id + len(ap))], dtype=object)
    return ap, ids


def appointment_rows(
    ap: pd.DataFrame,
    ap_ids: np.ndarray,
    referral_ids: np.ndarray,
    patient_ids: np.ndarray,
    spec_ids: np.ndarray,
    slot_ids: np.ndarray,
) -> pd.DataFrame:
    """The appointments table (contract columns) of internal appointment rows."""
    return pd.DataFrame(
        {
            "appointment_id": ap_ids,
            "referral_id": referral_ids[ap["referral_row"].to_numpy()],
            "patient_id": patient_ids[ap["patient_row"].to_numpy()],
            "specialist_id": spec_ids[ap["specialist_row"].to_numpy()],
            "slot_id": slot_ids[ap["slot"].to_numpy()],
            "visit_kind": ap["visit_kind"].to_numpy(),
            "booked_at": ap["booked_at"].to_numpy().astype("datetime64[s]"),
            "appointment_at": ap["appointment_at"].to_numpy().astype("datetime64[s]"),
            "text_reminder": ap["text_reminder"].to_numpy(dtype=bool),
            "outreach_call": ap["outreach_call"].to_numpy(dtype=bool),
            "outcome": pd.array(ap["outcome"].to_numpy(), dtype="string"),
            "outcome_at": ap["outcome_at"].to_numpy().astype("datetime64[s]"),
        }
    )


def appointment_truth(ap: pd.DataFrame, ap_ids: np.ndarray) -> pd.DataFrame:
    """The truth/appointments table of internal appointment rows."""
    p0 = ap["p_no_show_without_outreach"].to_numpy()
    p1 = ap["p_no_show_with_outreach"].to_numpy()
    return pd.DataFrame(
        {
            "appointment_id": ap_ids,
            "p_no_show_without_outreach": p0,
            "p_no_show_with_outreach": p1,
            "outreach_effect": p0 - p1,
        }
    )


def _assemble(
    directory: Directory,
    pop: Population,
    draws: ReferralDraws,
    book: SlotBook,
    funnel: Funnel,
    ap: pd.DataFrame,
    ap_ids: np.ndarray,
    end: np.datetime64,
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Public tables in contract order and the truth tables, with string ids assigned."""
    specs = directory.specialists
    spec_ids = specs["specialist_id"].to_numpy()
    f = draws.frame
    by_owner = np.empty(int(ap["owner"].max()) + 1 if len(ap) else 1, dtype=object)
    by_owner[ap["owner"].to_numpy()] = ap_ids
    availability = book.frame(by_owner, spec_ids, end)
    slot_ids = availability["slot_id"].to_numpy()
    referral_ids = f["referral_id"].to_numpy()
    appointments = appointment_rows(
        ap, ap_ids, referral_ids, pop.patients["patient_id"].to_numpy(), spec_ids, slot_ids
    )
    chosen = np.where(draws.chosen >= 0, spec_ids[np.maximum(draws.chosen, 0)], None)
    referrals = f.drop(columns="_patient_row").assign(
        created_at=f["created_at"].to_numpy().astype("datetime64[s]"),
        specialist_id=pd.array(chosen, dtype="string"),
        status=funnel.status,
        status_at=funnel.status_at.astype("datetime64[s]"),
    )
    tables = {
        "organizations": directory.organizations,
        "plans": directory.plans,
        "patients": pop.patients,
        "referring_providers": directory.referring_providers,
        "specialists": specs,
        "availability": availability,
        "referrals": referrals,
        "appointments": appointments,
    }
    tables = {k: tables[k][list(TABLES[k])].reset_index(drop=True) for k in TABLES}

    truth = {
        "patients": pd.DataFrame(
            {
                "patient_id": pop.patients["patient_id"],
                "no_show_propensity": pop.no_show_propensity,
                "transport_barrier": pop.transport_barrier,
                "prefers_same_sex": pop.prefers_same_sex,
            }
        ),
        "specialists": pd.DataFrame(
            {"specialist_id": spec_ids, "true_quality": directory.true_quality}
        ),
        "appointments": appointment_truth(ap, ap_ids),
        "match_utility": match_utility(draws, tables["availability"], ap, spec_ids, referral_ids),
    }
    return tables, truth


def match_utility(
    draws: ReferralDraws,
    availability: pd.DataFrame,
    appointments: pd.DataFrame,
    spec_ids: np.ndarray,
    referral_ids: np.ndarray,
    row_offset: int = 0,
) -> pd.DataFrame:
    """True utility of each kept candidate: static part plus wait (as of the referral) and continuity.

    `draws.truth_pairs` name referral rows of `draws.frame`; the table's referral ids are
    `referral_ids[row_offset:]` (a later period keeps the truth of its own referrals)."""
    tp = draws.truth_pairs
    f = draws.frame
    rows = tp["referral_row"].to_numpy()
    srow = tp["specialist_row"].to_numpy()
    created = f["created_at"].to_numpy()[rows]
    index = NextAvailableIndex(availability)
    wait = index.days_until_free_by_code(index.codes(spec_ids)[srow], created)
    # Continuity: an attended visit with this specialist before the referral, by integer keys.
    attended = (appointments["outcome"] == "attended").to_numpy(dtype=bool)
    n_spec = len(spec_ids)
    seen_key = (
        appointments["patient_row"].to_numpy()[attended].astype(np.int64) * n_spec
        + appointments["specialist_row"].to_numpy()[attended]
    )
    seen = pd.Series(appointments["appointment_at"].to_numpy()[attended]).groupby(seen_key).min()
    pair_key = draws.patient_row[rows].astype(np.int64) * n_spec + srow
    keys, first_visit = seen.index.to_numpy(), seen.to_numpy()
    if len(keys):
        pos = np.minimum(np.searchsorted(keys, pair_key), len(keys) - 1)
        continuity = (keys[pos] == pair_key) & (first_visit[pos] < created)
    else:
        continuity = np.zeros(len(rows), dtype=bool)
    wait_cost = pd.Series(f["urgency"].to_numpy()[rows]).map(WAIT_COST).to_numpy()
    utility = tp["static_utility"].to_numpy() + W_CONTINUITY * continuity - wait_cost * wait
    return pd.DataFrame(
        {
            "referral_id": pd.Categorical.from_codes(
                rows - row_offset, categories=referral_ids[row_offset:]
            ),
            "specialist_id": pd.Categorical.from_codes(srow, categories=spec_ids),
            "utility": utility.astype(np.float32),
            "focus_match": tp["focus_match"].to_numpy(),
            "true_quality": tp["true_quality"].to_numpy(),
            "distance_km": tp["distance_km"].to_numpy(),
            "wait_days": wait.astype(np.float32),
            "in_network": tp["in_network"].to_numpy(),
            "accepts_plan": tp["accepts_plan"].to_numpy(),
            "language_match": tp["language_match"].to_numpy(),
            "sex_match": tp["sex_match"].to_numpy(),
            "continuity": continuity,
            "chosen": srow == draws.chosen[rows],
        }
    )


def write_partitioned(files: list[tuple[pd.DataFrame, Path]], rows: int) -> None:
    """Write each table as Parquet row groups of `rows` rows, several tables at once (Arrow's
    encoding and compression release the GIL); the largest tables start first."""
    ordered = sorted(files, key=lambda f: -len(f[0]))
    with ThreadPoolExecutor(max_workers=min(len(ordered), os.cpu_count() or 1) or 1) as pool:
        done = [
            pool.submit(df.to_parquet, path, index=False, row_group_size=rows)
            for df, path in ordered
        ]
        for future in done:
            future.result()


def write_world(
    cfg: WorldConfig,
    out: Path,
    report: Reporter | None = None,
    partition_rows: int | None = None,
) -> dict[str, object]:
    """Generate a world into `out` (tables, truth/, manifest.json) and return the manifest.

    `partition_rows` (default: LARGE_PARTITION_ROWS for the large size, none otherwise) writes
    every table as row groups of that many rows, the tables in parallel: each stays one
    `<table>.parquet` file that every reader takes as before, and a Dask reader takes each row
    group as a partition.

    With a shift (cfg.shift), `out` holds the base world up to the shift start and `out/later/`
    the later period (synthetic_data.later: new rows, updates/, truth/, manifest.json); the
    base manifest's "later" names it."""
    if partition_rows is not None and partition_rows < 1:
        raise ValueError(f"partition_rows must be at least 1, not {partition_rows}")
    run = simulate_world(cfg, report)
    tables, truth = run.tables, run.truth
    later = None
    if cfg.shift is not None:
        from synthetic_data.later import build_later  # it builds on this module

        with _stage("later period after the shift", report):
            later = build_later(cfg, run)
    with _stage("calibration against published figures", report):
        calibration = calibration_table(tables)
    rows = partition_rows
    if rows is None and cfg.size == "large":
        rows = LARGE_PARTITION_ROWS

    def write(files: list[tuple[pd.DataFrame, Path]]) -> None:
        if rows is None:
            for df, path in files:
                df.to_parquet(path, index=False)
        else:
            write_partitioned(files, rows)

    with _stage("writing Parquet", report):
        out.mkdir(parents=True, exist_ok=True)
        (out / "truth").mkdir(exist_ok=True)
        files = [(df, out / f"{name}.parquet") for name, df in tables.items()]
        files += [(df, out / "truth" / f"{name}.parquet") for name, df in truth.items()]
        write(files)
    manifest: dict[str, object] = {
        "generator_version": GENERATOR_VERSION,
        "seed": cfg.seed,
        "size": cfg.size,
        "config": cfg.model_dump(mode="json", exclude={"shift"} if cfg.shift is None else None),
        "as_of": str(pd.Timestamp(cfg.as_of)),
        "counts": {name: len(df) for name, df in tables.items()},
        "truth_counts": {name: len(df) for name, df in truth.items()},
        "content_hashes": {name: content_hash(df) for name, df in tables.items()}
        | {f"truth/{name}": content_hash(df) for name, df in truth.items()},
        "calibration": calibration,
    }
    if later is not None:
        from synthetic_data.later import LATER_FOLDER, write_later  # builds on this module

        with _stage("writing the later period", report):
            later_manifest = write_later(cfg, later, out, write)
        manifest["later"] = {
            "folder": LATER_FOLDER,
            "period": later_manifest["period"],
            "counts": later_manifest["counts"],
        }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
