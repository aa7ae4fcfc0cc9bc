"""Memory and cold start of the running service with a large specialist directory (issue #8).

For each directory size N (default 50,000 and 500,000 specialists) this builds a dataset from a
base world (default data/world-medium, 3,000 specialists), checks it against the data contract,
loads it into a fresh SQLite store (`serving.store.Store(url).create(); .load_dataset(dir)`,
timed) and serves it with `bentoml serve serving.service:ReferralService` (the product's
configuration, `serving.service.SERVICE_CONFIG`: two workers). Measured per size:

* cold start: process spawn -> first /readyz 200 (seconds; polled every 0.05 s once the server
  process exists), and -> every worker has logged "Service ... initialized" (the log is read
  every 0.2 s; each worker loads its own copy of the directory, and /readyz answers 200 as soon
  as one of them is ready);
* memory of the whole process tree (the BentoML supervisor + its workers): summed RSS, PSS and
  USS (`psutil.Process.memory_full_info`; PSS splits shared pages between the processes that
  map them, so it is the sum that adds up), after ready and again after a burst of /recommend
  requests (one keep-alive client, `benchmarks.load.run_load`, bodies from
  `bench_service.recommend_bodies`), and the peak summed RSS while starting (sampled every
  0.2 s);
* /recommend latency of that burst (p50, p90, p99) and the candidates retrieval considered
  (`candidates_considered` of a few answers), so a reader sees how latency follows the directory.

Anchors measured in the same run: the same measurements on the base world as it is, and on the
floor service (`benchmarks/floor_service.py`: a trivial endpoint on the same configuration);
the table gives each size's PSS as a multiple of both.

How the directory is built. The generator itself was tried first: `WorldConfig.for_size(
"medium", specialists=50_000)` + `write_world` took 70 s with a 3.15 GB peak on this 2-core
machine and wrote 6.3M availability rows (126 per specialist: every specialist has at least one
slot a week over 18 months plus 12 weeks); its calendars, slot ids and truth grow linearly with
the specialists, so 500,000 would take well over 10 minutes, ~63M slot rows and ~30 GB: too
slow and too large. So the directory is replicated instead (`build_directory`):

* the base world's specialists, organizations and tables stay exactly as they are (referrals and
  appointments refer to them; patients, plans, referring providers, referrals, appointments are
  copied unchanged);
* N - base new specialists copy the base specialists in turn (so the specialty, network, plan,
  language and rating mix is the base world's), each with a new valid NPI (Luhn check digit,
  `features.codes.make_npis`, distinct from every id of the base world), at a copy of its
  practice: one new organization per (copy round, base practice), moved by a random offset of
  JITTER_KM (normal, per axis) and kept within METRO_RADIUS_KM of its metro's centre; the
  specialists sit at their practice's address, as in the generator;
* each new specialist gets only its source's next FREE_SLOTS free slots after the world's
  snapshot time (new slot ids; source specialists with fewer free slots give fewer), not the
  source's whole 18-month calendar (137 rows per specialist in the base world: 68M rows at 500k).

The result passes `features.validation.validate_directory` (what `referral-ml validate DIR`
runs) before it is loaded. Building, validating and loading run in a child process, so this
process stays small while the servers are measured. Every server runs alone, is stopped with its
process group (`tests.integration.servers.stop`) even on error, and is killed when its process
tree passes --max-server-gb; all traffic goes to 127.0.0.1 and is bounded in count and time.

    python benchmarks/bench_directory.py [--sizes 50000,500000] [--base data/world-medium]
        [--quick] [--results DIR] [--work DIR] [--ranker-dir DIR --no-show-dir DIR]

Writes benchmarks/results/directory-<date>.json and prints a Markdown table. A full run (50k and
500k) takes about 13 minutes here, most of it loading the 500k store (5.2M slot rows, ~4 min)
and starting the service on it (3-4.5 min).

What the 2026-12-02 runs showed (2 cores, 24 GB, other jobs running: load average 2-6, so the
times and latencies vary by ~50% between runs; the memory figures repeat within 2%):

* memory grows with the directory, about 0.55 GB per worker at 3k, 0.8 GB at 50k, 2.1 GB at
  500k after ready (1.5 GB after the burst); the peak while the two workers load at the same
  time is 2.6x the steady state: 11.6-11.8 GB summed RSS at 500k, near this machine's limit;
* one `Runtime.load` (in-process, cProfile) takes 26 s at 50k and 140 s at 500k: linear, no
  quadratic step; at 500k 77 s are `Store.read_tables` (SQLAlchemy rows -> Python objects ->
  DataFrames; 5.2M slot rows; this is also where the load-time peak of ~5.7 GB per process
  comes from) and 26 s `features.network.network_matrices`, computed twice per load (once for
  `RankingContext.build`, once for `DirectoryIndex`), in Python per specialist;
* RSS after ready is higher than after the burst (2.14 -> 1.54 GB per worker at 500k): pyarrow's
  mimalloc pool keeps ~0.6 GB freed while loading (pandas 3 strings are Arrow arrays) and only
  returns it once requests allocate again (an idle worker keeps it: checked for 60 s at 50k);
  `pyarrow.default_memory_pool().release_unused()` after a load drops it at once;
* /recommend latency follows the candidates retrieval keeps (all accepting specialists of the
  specialty within the urgency's radius, no cap): ~17 at 3k, ~250 at 50k, ~2,500 (up to 7,200)
  at 500k, p50 20-27 ms at 3k-50k and 90-140 ms at 500k, p99 0.45-0.85 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import psutil

ROOT: Final = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository's packages
    sys.path.insert(0, str(ROOT))

import benchmarks.bench_service as bench_service  # noqa: E402
from benchmarks.bench_generate import machine  # noqa: E402
from benchmarks.bench_service import (  # noqa: E402
    FLOOR_TARGET,
    SERVICE_TARGET,
    bentoml_serve,
    bundle_dirs,
    load_average,
    recommend_bodies,
)
from benchmarks.load import LoadError, run_load  # noqa: E402
from tests.integration.servers import http_status  # noqa: E402

DEFAULT_SIZES: Final = (50_000, 500_000)
QUICK_SIZES: Final = (2_000,)
FREE_SLOTS: Final = 10
JITTER_KM: Final = 5.0
METRO_RADIUS_KM: Final = 70.0  # the generator keeps everything within 70 km of a metro centre
BURST: Final = 200
QUICK_BURST: Final = 40
WARMUP: Final = 10
PROBES: Final = 20  # /recommend answers read for their candidate counts
SETTLE_S: Final = 1.0  # after every worker is initialized, before the first memory snapshot
SAMPLE_S: Final = 0.2
READY_POLL_S: Final = 0.05
MAX_SERVER_GB: Final = 16.0  # a safety stop on the 24 GB machine (peak is while loading)
START_TIMEOUT_S: Final = 600.0
UNCHANGED: Final = ("plans", "patients", "referring_providers", "referrals", "appointments")
INITIALIZED: Final = re.compile(r"Service \S+ initialized")
GB: Final = 1e9


# --------------------------------------------------------------------------- the directory


def _new_npis(rng: np.random.Generator, n: int, taken: set[str]) -> np.ndarray:
    """n distinct valid NPIs, none of them in `taken`."""
    from features.codes import make_npis

    drawn = make_npis(rng, n + len(taken) + 16)
    fresh = drawn[~pd.Series(drawn).isin(taken).to_numpy()]
    if len(fresh) < n:  # cannot happen: make_npis draws distinct ids
        raise RuntimeError("not enough fresh NPIs")
    return fresh[:n]


def _jittered(rng: np.random.Generator, orgs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The organizations' coordinates moved by a normal offset of JITTER_KM per axis, then
    pulled back to within METRO_RADIUS_KM of their metro's centre."""
    from features.geo import offset_km
    from synthetic_data.geography import METROS

    centres = {m.key: (m.lat, m.lon) for m in METROS}
    c_lat = orgs["metro"].map(lambda k: centres[k][0]).to_numpy(dtype=float)
    c_lon = orgs["metro"].map(lambda k: centres[k][1]).to_numpy(dtype=float)
    lat = orgs["latitude"].to_numpy(dtype=float)
    lon = orgs["longitude"].to_numpy(dtype=float)
    # Offsets from the centre in km (the inverse of features.geo.offset_km), plus the jitter.
    north = (lat - c_lat) * 110.574 + rng.normal(0.0, JITTER_KM, len(orgs))
    east = (lon - c_lon) * 111.320 * np.cos(np.radians(c_lat)) + rng.normal(
        0.0, JITTER_KM, len(orgs)
    )
    r = np.hypot(north, east)
    shrink = np.where(r > METRO_RADIUS_KM, METRO_RADIUS_KM / np.maximum(r, 1e-9), 1.0)
    new_lat, new_lon = offset_km(c_lat, c_lon, north * shrink, east * shrink)
    return new_lat.round(6), new_lon.round(6)


def _ragged(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ranges starts[i] .. starts[i] + lengths[i] - 1."""
    total = int(lengths.sum())
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(total, dtype=np.int64)


def build_directory(
    base: Path, n: int, out: Path, *, seed: int = 8, free_slots: int = FREE_SLOTS
) -> dict[str, Any]:
    """Write a dataset folder `out` whose directory holds `n` specialists: the base world's
    plus copies with new NPIs, jittered practices and their source's next `free_slots` free
    slots (see the module docstring). Returns what was built."""
    t0 = time.perf_counter()
    manifest = json.loads((base / "manifest.json").read_text())
    as_of = pd.Timestamp(manifest["as_of"])
    sp = pd.read_parquet(base / "specialists.parquet")
    orgs = pd.read_parquet(base / "organizations.parquet")
    slots = pd.read_parquet(base / "availability.parquet")
    providers = pd.read_parquet(base / "referring_providers.parquet", columns=["provider_id"])
    n_base = len(sp)
    if n < n_base:
        raise SystemExit(f"error: size {n:,} is below the base world's {n_base:,} specialists")
    n_new = n - n_base
    rng = np.random.default_rng(seed)
    src = np.arange(n_new) % n_base  # every base specialist copied in turn
    copy_round = np.arange(n_new) // n_base + 1

    # One new practice per (copy round, base practice) that the copies work at.
    org_row = pd.Index(orgs["organization_id"]).get_indexer(sp["organization_id"])
    if (org_row < 0).any():
        raise SystemExit("error: the base world has specialists without an organization")
    pair = copy_round.astype(np.int64) * len(orgs) + org_row[src]
    practice, pairs = pd.factorize(pair)
    pairs = np.asarray(pairs, dtype=np.int64)
    new_orgs = orgs.iloc[pairs % len(orgs)].reset_index(drop=True)
    new_orgs["organization_id"] = [
        f"{o}-R{r}" for o, r in zip(new_orgs["organization_id"], pairs // len(orgs), strict=True)
    ]
    new_orgs["latitude"], new_orgs["longitude"] = _jittered(rng, new_orgs)

    taken = set(sp["specialist_id"].astype(str)) | set(providers["provider_id"].astype(str))
    new_sp = sp.iloc[src].reset_index(drop=True)
    new_sp["specialist_id"] = _new_npis(rng, n_new, taken)
    new_sp["organization_id"] = new_orgs["organization_id"].to_numpy()[practice]
    new_sp["latitude"] = new_orgs["latitude"].to_numpy()[practice]
    new_sp["longitude"] = new_orgs["longitude"].to_numpy()[practice]

    # The next `free_slots` free slots of each base specialist after the snapshot, per copy.
    free = slots[(slots["status"] == "free") & (slots["start"] >= as_of)]
    free = free.assign(_row=pd.Index(sp["specialist_id"]).get_indexer(free["specialist_id"]))
    free = free.sort_values(["_row", "start"], kind="stable").groupby("_row").head(free_slots)
    per_row = np.bincount(free["_row"].to_numpy(), minlength=n_base)
    first = np.cumsum(per_row) - per_row
    picked = _ragged(first[src], per_row[src])
    owner = np.repeat(np.arange(n_new), per_row[src])
    copied = free.iloc[picked]
    new_slots = pd.DataFrame(
        {
            "slot_id": [f"SD{i:09d}" for i in range(1, len(picked) + 1)],
            "specialist_id": new_sp["specialist_id"].to_numpy()[owner],
            "start": copied["start"].to_numpy(),
            "end": copied["end"].to_numpy(),
            "slot_type": copied["slot_type"].to_numpy(),
            "status": "free",
            "booked_at": pd.Series(
                pd.NaT, index=range(len(picked)), dtype=slots["booked_at"].dtype
            ),
            "appointment_id": pd.array([None] * len(picked), dtype=slots["appointment_id"].dtype),
        }
    )

    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "organizations": pd.concat([orgs, new_orgs], ignore_index=True),
        "specialists": pd.concat([sp, new_sp], ignore_index=True),
        "availability": pd.concat([slots, new_slots], ignore_index=True),
    }
    for name, df in tables.items():
        df.to_parquet(out / f"{name}.parquet", index=False)
    for name in UNCHANGED:
        shutil.copyfile(base / f"{name}.parquet", out / f"{name}.parquet")
    counts = {name: len(df) for name, df in tables.items()}
    info = {
        "specialists": n,
        "base_specialists": n_base,
        "new_specialists": n_new,
        "new_organizations": len(new_orgs),
        "new_slots": len(new_slots),
        "free_slots_per_new_specialist": free_slots,
        "mean_slots_per_new_specialist": round(len(new_slots) / n_new, 2) if n_new else 0.0,
        "counts": counts,
        "seed": seed,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "manifest.json").write_text(
        json.dumps(
            {
                "as_of": manifest["as_of"],
                "base": str(base),
                "base_config": manifest.get("config"),
                "directory_benchmark": info,
            },
            indent=2,
        )
        + "\n"
    )
    return info


def prepare(base: Path, n: int | None, work: Path, seed: int, free_slots: int) -> dict[str, Any]:
    """In a child process: build (n) or take (None: the base world as it is) the dataset,
    validate a built one, load it into a fresh SQLite store and create a referral_ui key."""
    from features.validation import validate_directory
    from serving.keys import Role, create_key
    from serving.store import Store

    out: dict[str, Any] = {}
    if n is None:
        data = base
    else:
        data = work / "dataset"
        out["build"] = build_directory(base, n, data, seed=seed, free_slots=free_slots)
        t0 = time.perf_counter()
        report = validate_directory(data)
        out["validate"] = {"ok": report.ok, "seconds": round(time.perf_counter() - t0, 2)}
        if not report.ok:
            raise SystemExit(
                "error: the built directory breaks the data contract:\n"
                + "\n".join(report.lines()[:20])
            )
    db = work / "referral.db"
    url = f"sqlite:///{db}"
    t0 = time.perf_counter()
    store = Store(url)
    store.create()
    rows = store.load_dataset(data)
    out["store"] = {
        "url": url,
        "seconds": round(time.perf_counter() - t0, 2),
        "rows": rows,
        "file_bytes": db.stat().st_size,
    }
    out["key"] = create_key(store, Role.REFERRAL_UI)[1]
    store.dispose()
    out["data"] = str(data)
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


# --------------------------------------------------------------------------- servers


def _tree(server: psutil.Process) -> list[psutil.Process]:
    return [server, *server.children(recursive=True)]


def tree_memory(server: psutil.Process) -> dict[str, Any]:
    """Summed RSS, PSS and USS (bytes) of a server and all its descendants, and each process's."""
    processes = []
    for p in _tree(server):
        with contextlib.suppress(psutil.NoSuchProcess):
            m = p.memory_full_info()
            role = "supervisor" if p.pid == server.pid else "worker"
            processes.append(
                {
                    "pid": p.pid,
                    "role": role,
                    "rss": m.rss,
                    "pss": getattr(m, "pss", None),
                    "uss": getattr(m, "uss", None),
                }
            )
    out: dict[str, Any] = {"processes": processes}
    for field in ("rss", "pss", "uss"):
        values = [p[field] for p in processes]
        out[field] = sum(values) if all(v is not None for v in values) else None
    return out


class ServerWatch(threading.Thread):
    """While one `bentoml serve <target>` started by this process runs: finds it, samples the
    summed RSS of its tree (the peak), notes when `workers` workers have logged "initialized",
    and kills its process group once the tree passes `limit_bytes`."""

    def __init__(self, target: str, log: Path, workers: int, limit_bytes: float) -> None:
        super().__init__(name="server-watch", daemon=True)
        self.target, self.log, self.workers, self.limit = target, log, workers, limit_bytes
        me = psutil.Process()
        self._me = me
        self._known = {c.pid for c in me.children()}
        self._halt = threading.Event()
        self.t0 = time.monotonic()
        self.server: psutil.Process | None = None
        self.peak_rss = 0
        self.workers_ready_s: float | None = None
        self.ready_s: float | None = None  # first /readyz 200, polled every READY_POLL_S
        self.killed: str | None = None

    def _find(self) -> psutil.Process | None:
        for child in self._me.children():
            if child.pid in self._known:
                continue
            with contextlib.suppress(psutil.Error):
                cmd = child.cmdline()
                if "serve" in cmd and self.target in cmd:
                    return child
        return None

    def _count_initialized(self) -> int:
        try:
            return len(INITIALIZED.findall(self.log.read_text(errors="replace")))
        except OSError:
            return 0

    def _poll_ready(self, port: str) -> None:
        """First /readyz 200, more finely than bentoml_serve's poll (a request waiting in the
        listen backlog is answered as soon as a worker accepts)."""
        url = f"http://127.0.0.1:{port}/readyz"
        while self.ready_s is None and not self._halt.is_set():
            if http_status(url) == 200:
                self.ready_s = time.monotonic() - self.t0
            else:
                self._halt.wait(READY_POLL_S)

    def run(self) -> None:
        while not self._halt.wait(SAMPLE_S):
            if self.server is None:
                self.server = self._find()
                if self.server is None:
                    continue
                with contextlib.suppress(psutil.Error, ValueError, IndexError):
                    cmd = self.server.cmdline()
                    port = cmd[cmd.index("--port") + 1]
                    threading.Thread(
                        target=self._poll_ready, args=(port,), name="ready-poll", daemon=True
                    ).start()
            rss = 0
            for p in _tree(self.server) if self.server.is_running() else []:
                with contextlib.suppress(psutil.Error):
                    rss += p.memory_info().rss
            self.peak_rss = max(self.peak_rss, rss)
            if rss > self.limit and self.killed is None:
                self.killed = f"the server's processes passed {self.limit / GB:.1f} GB RSS"
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if os.getpgid(self.server.pid) == self.server.pid:  # its own group
                        os.killpg(self.server.pid, signal.SIGKILL)
            if self.workers_ready_s is None and self._count_initialized() >= self.workers:
                self.workers_ready_s = time.monotonic() - self.t0

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **headers}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def candidates(
    base: str, bodies: list[dict[str, Any]], headers: dict[str, str]
) -> dict[str, float]:
    """`candidates_considered` of the first PROBES bodies' answers (mean, median, max)."""
    found = []
    for body in bodies[:PROBES]:
        with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
            found.append(int(_post(f"{base}/recommend", body, headers)["candidates_considered"]))
    if not found:
        return {}
    a = np.asarray(found, dtype=float)
    return {
        "answers": len(found),
        "mean": float(a.mean()),
        "median": float(np.median(a)),
        "max": float(a.max()),
    }


def measure(
    target: str,
    env: dict[str, str],
    logs: Path,
    *,
    path: str,
    bodies: list[dict[str, Any]],
    headers: dict[str, str],
    burst: int,
    seconds: float,
    workers: int,
    limit_bytes: float,
) -> dict[str, Any]:
    """Start `target`, time it to ready, snapshot its memory, send the burst, snapshot again,
    stop it. A failure is recorded in "error" (the run goes on with the next size)."""
    log = logs / f"{target.split(':')[-1]}.log"  # where bench_service.bentoml_serve writes
    watch = ServerWatch(target, log, workers, limit_bytes)
    out: dict[str, Any] = {"target": target, "workers": workers, "error": None}
    out["load_average_before"] = load_average()
    watch.start()
    try:
        with bentoml_serve(target, env, logs) as base:
            served_s = time.monotonic() - watch.t0
            out["ready_seen_by_bentoml_serve_s"] = round(served_s, 2)
            out["cold_start_s"] = round(min(watch.ready_s or served_s, served_s), 2)
            deadline = time.monotonic() + bench_service.START_TIMEOUT_S
            while (
                watch.workers_ready_s is None and watch.is_alive() and time.monotonic() < deadline
            ):
                time.sleep(SAMPLE_S)
            out["all_workers_ready_s"] = (
                round(watch.workers_ready_s, 2) if watch.workers_ready_s is not None else None
            )
            time.sleep(SETTLE_S)
            if watch.server is None:
                raise SystemExit("error: the server process was not found")
            out["memory_ready"] = tree_memory(watch.server)
            load = run_load(
                f"{base}{path}",
                bodies,
                headers=headers,
                clients=1,
                requests=burst,
                warmup=WARMUP,
                seconds=seconds,
            )
            out["memory_after_burst"] = tree_memory(watch.server)
            out["load_average_after"] = load_average()
            out["burst"] = load
            if path == "/recommend":
                out["candidates"] = candidates(base, bodies, headers)
    except (SystemExit, LoadError, psutil.Error, OSError) as exc:
        message = str(exc).strip().splitlines()
        out["error"] = watch.killed or (message[0] if message else type(exc).__name__)
        print(f"  {target}: {out['error']}", file=sys.stderr)
    finally:
        watch.stop()
    out["startup_peak_rss"] = watch.peak_rss
    return out


# --------------------------------------------------------------------------- report


def _gb(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value / GB:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.1f}x"


def _mem(run: dict[str, Any], when: str, field: str) -> float | None:
    snapshot = run.get(when)
    return None if snapshot is None else snapshot.get(field)


def markdown(out: dict[str, Any]) -> str:
    floor = out["floor"]
    runs = out["runs"]
    base = next((r.get("service") or {} for r in runs if r["label"] == "base"), {})
    base_pss = _mem(base, "memory_ready", "pss")
    base_cold = base.get("cold_start_s")
    floor_pss = _mem(floor, "memory_ready", "pss")
    lines = [
        f"Directory benchmark (base {out['base']}, {out['machine']['cpus']} CPUs, "
        f"{out['service_config']['workers']} workers, load average before "
        f"{out['load_average_before']}, after {out['load_average_after']}; memory in GB summed "
        "over the supervisor and its workers; new specialists carry their source's next "
        f"{out['free_slots']} free slots only)",
        "",
        "| service | specialists | slots | store load s | cold start s | all workers s "
        "| peak RSS starting | RSS ready | PSS ready | RSS after burst | PSS after burst "
        "| /recommend p50 ms | p99 ms | candidates (mean) | PSS / base | PSS / floor "
        "| cold start / base |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def row(label: str, specialists: str, slots: str, store_s: str, s: dict[str, Any]) -> str:
        if s.get("error"):
            return f"| {label} | {specialists} | {slots} | {store_s} | failed: {s['error']} |"
        pss = _mem(s, "memory_ready", "pss")
        burst = s.get("burst") or {}
        ms = burst.get("latency_ms") or {}
        p50 = f"{ms['p50']:.2f}" if ms and s["target"] != FLOOR_TARGET else "-"
        p99 = f"{ms['p99']:.2f}" if ms and s["target"] != FLOOR_TARGET else "-"
        cand = s.get("candidates") or {}
        cand_text = f"{cand['mean']:,.0f}" if "mean" in cand else "-"
        workers_s = s.get("all_workers_ready_s")
        return (
            f"| {label} | {specialists} | {slots} | {store_s} | {s['cold_start_s']:.1f} | "
            f"{'-' if workers_s is None else f'{workers_s:.1f}'} | "
            f"{_gb(s['startup_peak_rss'])} | {_gb(_mem(s, 'memory_ready', 'rss'))} | "
            f"{_gb(pss)} | {_gb(_mem(s, 'memory_after_burst', 'rss'))} | "
            f"{_gb(_mem(s, 'memory_after_burst', 'pss'))} | {p50} | {p99} | "
            f"{cand_text} | {_ratio(pss, base_pss)} | {_ratio(pss, floor_pss)} | "
            f"{_ratio(s['cold_start_s'], base_cold)} |"
        )

    lines.append(row("floor (trivial endpoint)", "-", "-", "-", floor))
    for r in runs:
        slots = r["store"]["rows"].get("availability") if r.get("store") else None
        lines.append(
            row(
                r["label"],
                f"{r['specialists']:,}",
                "-" if slots is None else f"{slots:,}",
                f"{r['store']['seconds']:.1f}" if r.get("store") else "-",
                r.get("service") or {"error": r.get("error", "not run")},
            )
        )
    lines += ["", "| directory | build s | validate s | store file GB | prepare peak RSS GB |"]
    lines.append("|---|---:|---:|---:|---:|")
    for r in runs:
        if r.get("store") is None:
            continue
        build, check = r.get("build"), r.get("validate")
        lines.append(
            f"| {r['label']} | {'-' if build is None else build['seconds']} | "
            f"{'-' if check is None else check['seconds']} | "
            f"{_gb(r['store']['file_bytes'], 3)} | {_gb(r['prepare_peak_rss'])} |"
        )
    lines.append(f"\nwhole run: {out['elapsed_seconds']:.0f} s")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s.replace("_", "")) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("sizes: comma-separated whole numbers") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError("sizes: at least one size, each > 0")
    return sizes


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=ROOT / "data" / "world-medium")
    parser.add_argument("--sizes", type=_sizes, default=None, help="default 50000,500000")
    parser.add_argument("--quick", action="store_true", help="a 2,000 directory, a short burst")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--work", type=Path, default=None, help="keep datasets and stores here")
    parser.add_argument("--ranker-dir", type=Path, default=None)
    parser.add_argument("--no-show-dir", type=Path, default=None)
    parser.add_argument("--free-slots", type=int, default=FREE_SLOTS)
    parser.add_argument("--burst", type=int, default=None, help=f"/recommend requests ({BURST})")
    parser.add_argument("--bodies", type=int, default=100, help="distinct /recommend bodies")
    parser.add_argument("--seconds", type=float, default=120.0, help="cap of each burst")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--max-server-gb", type=float, default=MAX_SERVER_GB)
    parser.add_argument("--start-timeout", type=float, default=START_TIMEOUT_S)
    args = parser.parse_args(argv)
    sizes = args.sizes or list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    burst = args.burst or (QUICK_BURST if args.quick else BURST)
    n_bodies = min(args.bodies, 20) if args.quick else args.bodies
    # bentoml_serve reads its start timeout (180 s) from its module's global at each call; a
    # 500k directory may take longer, so it is raised for this run (a setting, not a copy).
    setattr(bench_service, "START_TIMEOUT_S", args.start_timeout)  # noqa: B010

    from serving.service import SERVICE_CONFIG

    started = time.monotonic()
    manifest = json.loads((args.base / "manifest.json").read_text())
    as_of = datetime.fromisoformat(str(manifest["as_of"]))
    ranker_dir, no_show_dir = bundle_dirs(args.ranker_dir, args.no_show_dir)
    bodies = recommend_bodies(args.base, as_of, n_bodies)
    workers = int(SERVICE_CONFIG["workers"])
    limit = args.max_server_gb * GB
    out: dict[str, Any] = {
        "benchmark": "directory",
        "date": date.today().isoformat(),
        "quick": args.quick,
        "base": str(args.base),
        "sizes": sizes,
        "free_slots": args.free_slots,
        "burst_requests": burst,
        "recommend_bodies": len(bodies),
        "machine": machine() | {"memory_bytes": psutil.virtual_memory().total},
        "env": {k: os.environ[k] for k in ("OMP_WAIT_POLICY",) if k in os.environ},
        "service_config": SERVICE_CONFIG,
        "bundles": {"ranker": str(ranker_dir), "no_show": str(no_show_dir)},
        "load_average_before": load_average(),
        "method": __doc__,
    }
    failed = False
    with contextlib.ExitStack() as stack:
        if args.work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-dir-")))
        else:
            work = args.work
            work.mkdir(parents=True, exist_ok=True)
        print("floor service ...", file=sys.stderr, flush=True)
        out["floor"] = measure(
            FLOOR_TARGET,
            {},
            work / "logs" / "floor",
            path="/floor",
            bodies=bodies,
            headers={},
            burst=burst,
            seconds=args.seconds,
            workers=workers,
            limit_bytes=limit,
        )
        failed |= out["floor"]["error"] is not None
        runs: list[dict[str, Any]] = []
        context = multiprocessing.get_context("spawn")
        for n in [None, *sizes]:
            label = "base" if n is None else f"{n:,}"
            folder = work / ("base" if n is None else f"n-{n}")
            folder.mkdir(parents=True, exist_ok=True)
            print(f"{label}: preparing ...", file=sys.stderr, flush=True)
            run: dict[str, Any] = {"label": label}
            try:
                with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                    prepared = pool.submit(
                        prepare, args.base, n, folder, args.seed, args.free_slots
                    ).result()
            except (Exception, SystemExit) as exc:  # a child that died (BrokenProcessPool) too
                lines = str(exc).strip().splitlines()
                run["error"] = f"preparing: {lines[0] if lines else type(exc).__name__}"
                run["specialists"] = n
                print(f"  {run['error']}", file=sys.stderr)
                failed = True
                runs.append(run)
                continue
            key = prepared.pop("key")
            run.update(prepared)
            run["prepare_peak_rss"] = run.pop("peak_rss_bytes")
            run["specialists"] = prepared["store"]["rows"]["specialists"]
            print(f"{label}: serving ...", file=sys.stderr, flush=True)
            env = {
                "REFERRAL_ML_STORE": prepared["store"]["url"],
                "REFERRAL_ML_RANKER_DIR": str(ranker_dir),
                "REFERRAL_ML_NO_SHOW_DIR": str(no_show_dir),
                "REFERRAL_ML_NOW": as_of.isoformat(sep=" "),
            }
            run["service"] = measure(
                SERVICE_TARGET,
                env,
                work / "logs" / ("base" if n is None else f"n-{n}"),
                path="/recommend",
                bodies=bodies,
                headers={"Authorization": f"Bearer {key}"},
                burst=burst,
                seconds=args.seconds,
                workers=workers,
                limit_bytes=limit,
            )
            failed |= run["service"]["error"] is not None
            runs.append(run)
        out["runs"] = runs
    base_run = runs[0].get("service") or {}
    for r in [out["floor"], *(run["service"] for run in runs if "service" in run)]:
        pss = _mem(r, "memory_ready", "pss")
        r["ratios"] = {
            "pss_to_base": _safe_div(pss, _mem(base_run, "memory_ready", "pss")),
            "pss_to_floor": _safe_div(pss, _mem(out["floor"], "memory_ready", "pss")),
            "rss_to_base": _safe_div(
                _mem(r, "memory_ready", "rss"), _mem(base_run, "memory_ready", "rss")
            ),
            "cold_start_to_base": _safe_div(r.get("cold_start_s"), base_run.get("cold_start_s")),
            "cold_start_to_floor": _safe_div(
                r.get("cold_start_s"), out["floor"].get("cold_start_s")
            ),
        }
    out["load_average_after"] = load_average()
    out["elapsed_seconds"] = round(time.monotonic() - started, 1)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"directory-{out['date']}.json"
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(markdown(out))
    print(f"\nwrote {path}")
    return 1 if failed else 0


def _safe_div(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else round(a / b, 3)


if __name__ == "__main__":
    sys.exit(main())
