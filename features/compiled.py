"""Compiled trees for the serving path: a LightGBM model as native code, plain LightGBM as the
fallback.

lleaves turns a LightGBM text model into one LLVM function that scores a float64 matrix with the
GIL released; on this project's models it gives LightGBM's raw scores to within 1e-12 and is
many times faster at serving sizes (`benchmarks/bench_trees.py` measures it beside LightGBM and
treelite/tl2cgen). A `TreeScorer` is what the predictor and the ranker call for raw scores:

- `LleavesScorer`: the compiled library, loaded once per process;
- `LightGBMScorer`: `Booster.predict(raw_score=True)` with a bounded thread count.

A library is built once per model, CPU and compiler version (the key hashes all of them) and
never per request: `referral-ml export` writes it into the bundle; a bundle without one for this
machine is compiled on its first load into the cache folder (`REFERRAL_ML_TREES_CACHE`, default
`~/.cache/referral-ml/trees/`), under a lock so that two workers starting together compile once.
A library is written atomically with a sidecar JSON holding its key and SHA-256, checked before
it is loaded; once loaded it must reproduce LightGBM's scores on probe rows. When lleaves is
missing, compiling fails, a library is corrupt or does not load, or `REFERRAL_ML_TREES=lightgbm`,
the scorer is plain LightGBM and one log line says why (never a value of a row).

lleaves 1.3 (the newest release) still calls llvmlite's legacy pass manager, which llvmlite 0.45
removed; its parser and code generator are used here with llvmlite's new pass manager instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import lightgbm as lgb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

BACKEND_ENV: Final = "REFERRAL_ML_TREES"  # auto (default) | lleaves | lightgbm
THREADS_ENV: Final = "REFERRAL_ML_MODEL_THREADS"  # threads per model call (default 1)
CACHE_ENV: Final = "REFERRAL_ML_TREES_CACHE"  # where libraries built on load are kept
TOLERANCE: Final = 1e-6  # a compiled library must match LightGBM's raw scores this closely
# Bumped when the library format or the compile options below change (it is part of the key).
LAYOUT: Final = "1"
SUFFIX: Final = ".lleaves.o"
_ROOT_FUNCTION: Final = "forest_root"
_BLOCK_SIZE: Final = 34  # trees per cache block (lleaves' default)
_PROBE_ROWS: Final = 256
_MIN_ROWS_PER_THREAD: Final = 2_000  # below this a second thread costs more than it saves


class CompileError(RuntimeError):
    """The compiled backend is unavailable or its library is unusable (the message says why)."""


class TreeSettings(BaseModel):
    """How the serving path scores trees: backend, threads per call, library cache folder.

    backend: "auto" compiled trees where available, else LightGBM (with a log line); "lleaves"
    compiled trees or a load error (for a benchmark or a deployment that must not degrade
    silently); "lightgbm" plain LightGBM."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["auto", "lleaves", "lightgbm"] = "auto"
    threads: int = Field(default=1, ge=1, le=256)
    cache_dir: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TreeSettings:
        """From REFERRAL_ML_TREES, REFERRAL_ML_MODEL_THREADS and REFERRAL_ML_TREES_CACHE; a bad
        value raises ValueError naming the variable and what is allowed."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        if env.get(BACKEND_ENV, "").strip():
            values["backend"] = env[BACKEND_ENV].strip().lower()
        if env.get(THREADS_ENV, "").strip():
            values["threads"] = env[THREADS_ENV].strip()
        if env.get(CACHE_ENV, "").strip():
            values["cache_dir"] = Path(env[CACHE_ENV].strip()).expanduser()
        try:
            return cls(**values)
        except ValidationError as exc:
            name = {"backend": BACKEND_ENV, "threads": THREADS_ENV, "cache_dir": CACHE_ENV}
            field = str(exc.errors()[0]["loc"][0])
            allowed = {
                "backend": "auto, lleaves or lightgbm",
                "threads": "a whole number from 1 to 256",
                "cache_dir": "a folder path",
            }
            raise ValueError(f"{name[field]} must be {allowed[field]}") from None

    def cache_folder(self) -> Path:
        """The folder for libraries compiled on load."""
        if self.cache_dir is not None:
            return self.cache_dir
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "referral-ml" / "trees"


class TreeScorer(Protocol):
    """Raw scores (LightGBM's `raw_score=True`) of model-ordered feature rows."""

    backend: str  # "lleaves" | "lightgbm"
    threads: int | None  # per call (None: LightGBM's default, the model's own setting)
    encoder: FrameEncoder | None  # rows -> LightGBM's matrix, when the backend has one

    def raw_score(self, X: pd.DataFrame | np.ndarray) -> np.ndarray: ...


def lightgbm_threads(threads: int | None) -> dict[str, Any]:
    """`Booster.predict` keyword arguments for a thread count (None: the model's default)."""
    return {} if threads is None else {"num_threads": threads}


class LightGBMScorer:
    """Plain `Booster.predict` with `threads` threads (None: the model's own setting)."""

    backend = "lightgbm"
    encoder: FrameEncoder | None = None

    def __init__(self, booster: lgb.Booster, threads: int | None = None):
        self.booster = booster
        self.threads = threads

    def raw_score(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Raw scores from LightGBM."""
        scores = self.booster.predict(X, raw_score=True, **lightgbm_threads(self.threads))
        return np.asarray(scores, dtype=float)


class FrameEncoder:
    """A model's input rows as the float64 matrix LightGBM itself scores: pandas categorical
    columns as their training-time codes (an unseen category or a missing value is NaN), every
    other column as its value in LightGBM's common dtype. Category remaps are computed once per
    distinct dtype, and columns are read as arrays, so a call costs microseconds, not the
    milliseconds of LightGBM's own DataFrame conversion."""

    def __init__(
        self,
        n_features: int,
        pandas_categorical: list[list[Any]],
        columns: tuple[str, ...] | list[str] | None = None,
    ):
        """`columns`: the model's input columns by name, picked from a wider frame (cheaper
        than selecting them in pandas); None: a frame's columns are the model's, in order."""
        self.n_features = n_features
        self.categories = [pd.Index(c) for c in pandas_categorical]
        self.columns = None if columns is None else [str(c) for c in columns]
        if self.columns is not None and len(self.columns) != n_features:
            raise ValueError(f"{len(self.columns)} column names for {n_features} features")
        self._remaps: dict[tuple[int, pd.CategoricalDtype], np.ndarray | None] = {}
        self._positions: tuple[pd.Index, list[int]] | None = None

    def __call__(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """(rows, n_features) C-contiguous float64; ValueError for a frame LightGBM refuses."""
        if not isinstance(X, pd.DataFrame):
            A = np.asarray(X, dtype=np.float64)
            if A.ndim != 2 or A.shape[1] != self.n_features:
                raise ValueError(f"expected {self.n_features} feature columns, got {A.shape}")
            return np.ascontiguousarray(A)
        arrays = _column_arrays(X, self._columns_of(X))
        cat_cols = [i for i, a in enumerate(arrays) if isinstance(a.dtype, pd.CategoricalDtype)]
        if len(cat_cols) != len(self.categories):
            raise ValueError(
                f"{len(cat_cols)} categorical columns where the model was trained with "
                f"{len(self.categories)}"
            )
        codes = {
            i: self._codes(i, arrays[i], trained)
            for i, trained in zip(cat_cols, self.categories, strict=True)
        }
        # LightGBM casts the frame to the common type of its columns and float32 (float32 for a
        # frame of small ints, bools and float32 only), then scores in double. A categorical
        # column counts as its codes' integer type, or float64 once a code is missing.
        kinds = []
        for i, a in enumerate(arrays):
            if i in codes:
                c = codes[i]
                kinds.append(c.dtype.type if c.dtype.kind == "i" else np.float64)
            elif a.dtype.kind in "iufb":
                kinds.append(a.dtype.type)
            else:
                raise ValueError(f"feature column {i} is {a.dtype}: LightGBM takes numbers")
        target = np.result_type(*kinds, np.float32)
        out = np.empty((len(X), self.n_features), dtype=np.float64, order="C")
        for i, a in enumerate(arrays):
            if i in codes:
                out[:, i] = codes[i]
            elif isinstance(a, np.ndarray):
                out[:, i] = a.astype(target, copy=False)
            else:  # a nullable extension array: <NA> is NaN
                out[:, i] = a.to_numpy(dtype=target, na_value=np.nan)
        return out

    def _columns_of(self, X: pd.DataFrame) -> list[int]:
        """Positions of the model's columns in X (the last frame's layout is remembered)."""
        if self.columns is None:
            if X.shape[1] != self.n_features:
                raise ValueError(f"expected {self.n_features} feature columns, got {X.shape[1]}")
            return list(range(self.n_features))
        if self._positions is not None and self._positions[0].equals(X.columns):
            return self._positions[1]
        at = X.columns.get_indexer(self.columns)
        if (at < 0).any():
            missing = [c for c, i in zip(self.columns, at, strict=True) if i < 0]
            raise ValueError(f"feature columns missing: {missing}")
        self._positions = (X.columns, [int(i) for i in at])
        return self._positions[1]

    def _codes(self, i: int, values: pd.Categorical, trained: pd.Index) -> np.ndarray:
        """The training-time codes of a categorical column: int codes, or float with NaN."""
        dtype = values.dtype
        key = (i, dtype)
        if key not in self._remaps:
            same = list(dtype.categories) == list(trained)
            # this frame's codes -> the training codes (-1: a category unseen in training)
            self._remaps[key] = None if same else trained.get_indexer(dtype.categories)
        codes = np.asarray(values.codes)
        remap = self._remaps[key]
        if remap is not None:
            codes = np.where(codes >= 0, remap[np.maximum(codes, 0)], -1)
        if (codes < 0).any():
            return np.where(codes >= 0, codes, np.nan)
        return codes


def _column_arrays(X: pd.DataFrame, positions: list[int]) -> list[Any]:
    """The arrays (numpy or extension arrays) of the columns at `positions`, without building
    a Series per column (pandas' public per-column access costs ~25 us a column, this private
    accessor ~1 us; the public way is the fallback should a pandas release drop it)."""
    get = getattr(X, "_get_column_array", None)
    if get is not None:
        try:
            return [get(i) for i in positions]
        except (TypeError, IndexError, AttributeError):
            pass
    return [X.iloc[:, i].array for i in positions]


class LleavesScorer:
    """A model compiled by lleaves: the library's entry function over encoded rows."""

    backend = "lleaves"

    def __init__(self, library: _Library, encoder: FrameEncoder, threads: int = 1):
        self._library = library
        self.encoder: FrameEncoder | None = encoder
        self.threads: int | None = threads
        self._encode = encoder
        self.path = library.path
        self._pool: ThreadPoolExecutor | None = None

    def raw_score(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Raw scores from the compiled trees."""
        return self.score_matrix(self._encode(X))

    def score_matrix(self, A: np.ndarray) -> np.ndarray:
        """Raw scores of an already encoded C-contiguous float64 matrix."""
        n = A.shape[0]
        out = np.zeros(n, dtype=np.float64)
        if n == 0:
            return out
        most = self.threads or 1
        threads = min(most, max(1, n // _MIN_ROWS_PER_THREAD))
        if threads == 1:
            self._library.run(A, out, 0, n)
            return out
        if self._pool is None:
            self._pool = ThreadPoolExecutor(most, thread_name_prefix="trees")
        step = math.ceil(n / threads)
        jobs = [
            self._pool.submit(self._library.run, A, out, s, min(s + step, n))
            for s in range(0, n, step)
        ]
        for job in jobs:
            job.result()
        return out


@dataclass
class _Library:
    """A loaded object file: the execution engine must outlive the entry function."""

    path: Path
    engine: Any
    entry: Callable[..., None]
    n_features: int

    def run(self, A: np.ndarray, out: np.ndarray, start: int, end: int) -> None:
        from ctypes import POINTER, c_double

        if A.dtype != np.float64 or not A.flags.c_contiguous or A.shape[1] != self.n_features:
            raise ValueError("the compiled trees take a C-contiguous float64 matrix")
        self.entry(
            A.ctypes.data_as(POINTER(c_double)), out.ctypes.data_as(POINTER(c_double)), start, end
        )


# -- building, finding and loading libraries ---------------------------------------------------


def toolchain() -> dict[str, str]:
    """What a library is specific to: compiler versions and the CPU it is built for."""
    import llvmlite.binding as llvm

    return {
        "layout": LAYOUT,
        "lleaves": importlib.metadata.version("lleaves"),
        "llvmlite": importlib.metadata.version("llvmlite"),
        "llvm": ".".join(map(str, llvm.llvm_version_info)),
        "machine": platform.machine(),
        "triple": llvm.get_process_triple(),
        "cpu": llvm.get_host_cpu_name(),
        "cpu_features": _host_features(),
    }


def library_key(model_text: bytes, tools: Mapping[str, str] | None = None) -> str:
    """SHA-256 of the model text, the compiler versions and the CPU: a library's identity."""
    tools = toolchain() if tools is None else tools
    digest = hashlib.sha256(json.dumps(dict(tools), sort_keys=True).encode())
    digest.update(b"\0")
    digest.update(model_text)
    return digest.hexdigest()


def library_path(directory: Path, key: str) -> Path:
    """Where the library of `key` lives in a folder (its sidecar: the same name + .json)."""
    return Path(directory) / f"trees-{key[:24]}{SUFFIX}"


def build_library(model_file: Path, directory: Path, lock: bool = True) -> Path:
    """Compile `model_file` into `directory` (atomically, once: an existing valid library for
    the same key is kept) and return the library's path; CompileError when it cannot. `lock`:
    wait for another process compiling into the same folder (a `.lock` file there)."""
    model_file = Path(model_file)
    try:
        key = library_key(model_file.read_bytes())
    except ImportError as exc:
        raise CompileError(f"lleaves is not installed ({exc.name})") from exc
    directory.mkdir(parents=True, exist_ok=True)
    path = library_path(directory, key)
    with _locked(directory / ".lock") if lock else contextlib.nullcontext():
        if _read_valid(path, key) is not None:
            return path
        t0 = time.perf_counter()
        data = _compile_object(model_file)
        seconds = time.perf_counter() - t0
        _write_atomic(path, data)
        sidecar = {
            "key": key,
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "model": model_file.name,
            "compile_seconds": round(seconds, 3),
            "toolchain": toolchain(),
        }
        _write_atomic(_sidecar(path), json.dumps(sidecar, indent=2).encode())
    log.info("compiled trees of %s in %.1f s: %s", model_file.name, seconds, path.name)
    return path


def scorer_for(
    booster: lgb.Booster,
    model_file: Path,
    settings: TreeSettings,
    label: str,
    columns: tuple[str, ...] | None = None,
) -> TreeScorer:
    """The serving scorer of a loaded model: its compiled library from the bundle or the cache
    folder (compiled into the cache when neither holds one for this machine), else LightGBM.
    `label` names the model in the one log line a fallback writes; `columns`: see
    `FrameEncoder` (a compiled scorer then takes a frame with more columns)."""
    fallback = LightGBMScorer(booster, settings.threads)
    if settings.backend == "lightgbm":
        log.info("%s: trees scored by LightGBM (%s=lightgbm)", label, BACKEND_ENV)
        return fallback
    model_file = Path(model_file)
    try:
        return _compiled_scorer(booster, model_file, settings, columns)
    except CompileError as exc:
        reason = str(exc)
    except Exception as exc:  # a compiler bug must not stop the model from serving
        reason = f"{type(exc).__name__}: {exc}"
    if settings.backend == "lleaves":
        raise ValueError(f"{label}: {BACKEND_ENV}=lleaves but compiled trees unavailable: {reason}")
    log.warning("%s: compiled trees unavailable, scoring with LightGBM: %s", label, reason)
    return fallback


def _compiled_scorer(
    booster: lgb.Booster,
    model_file: Path,
    settings: TreeSettings,
    columns: tuple[str, ...] | None,
) -> TreeScorer:
    try:
        model_text = model_file.read_bytes()
        key = library_key(model_text)
    except ImportError as exc:
        raise CompileError(f"lleaves is not installed ({exc.name})") from exc
    except OSError as exc:
        raise CompileError(f"cannot read {model_file.name}: {exc.strerror}") from exc
    encoder = FrameEncoder(booster.num_feature(), _pandas_categorical(booster), columns)
    problems: list[str] = []
    candidates = [library_path(model_file.parent, key), library_path(settings.cache_folder(), key)]
    for path in candidates:
        if not _sidecar(path).exists() and not path.exists():
            continue
        try:
            return _checked_scorer(path, key, booster, encoder, settings.threads)
        except CompileError as exc:
            problems.append(str(exc))
    if problems:  # a library was there and is unusable: say so, do not compile over it
        raise CompileError("; ".join(problems))
    path = build_library(model_file, settings.cache_folder())
    return _checked_scorer(path, key, booster, encoder, settings.threads)


def _checked_scorer(
    path: Path, key: str, booster: lgb.Booster, encoder: FrameEncoder, threads: int
) -> LleavesScorer:
    data = _read_valid(path, key)
    if data is None:
        raise CompileError(f"{path.name} is corrupt or incomplete (its checksum does not match)")
    try:
        library = _load_object(path, data, booster.num_feature())
    except Exception as exc:
        raise CompileError(f"{path.name} does not load: {exc}") from exc
    scorer = LleavesScorer(library, encoder, threads)
    probe = probe_rows(booster)
    expected = np.asarray(booster.predict(probe, raw_score=True, num_threads=1), dtype=float)
    got = scorer.score_matrix(probe)
    worst = float(np.max(np.abs(got - expected))) if len(probe) else 0.0
    if not worst <= TOLERANCE:
        raise CompileError(f"{path.name} scores differ from LightGBM's by {worst:.3g}")
    return scorer


def probe_rows(booster: lgb.Booster, n: int = _PROBE_ROWS, seed: int = 0) -> np.ndarray:
    """Rows over every split threshold and category of the model, with missing values and
    unseen categories, as LightGBM's float matrix (categorical columns as codes)."""
    dump = booster.dump_model(num_iteration=-1)
    n_features = booster.num_feature()
    thresholds: list[list[float]] = [[] for _ in range(n_features)]
    categorical = [False] * n_features
    for tree in dump["tree_info"]:
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "split_feature" not in node:
                continue
            f = int(node["split_feature"])
            if node.get("decision_type") == "==":
                categorical[f] = True
                thresholds[f].extend(float(c) for c in str(node["threshold"]).split("||"))
            else:
                thresholds[f].append(float(node["threshold"]))
            stack.extend((node["left_child"], node["right_child"]))
    rng = np.random.default_rng(seed)
    A = np.zeros((n, n_features))
    for f in range(n_features):
        values = np.unique(thresholds[f]) if thresholds[f] else np.zeros(1)
        if categorical[f]:
            pool = np.concatenate([values, [values.max() + 1, 999.0, -1.0]])
        else:
            pool = np.concatenate([values, values - 1e-3, values + 1e-3, [values.min() - 1]])
        A[:, f] = rng.choice(pool, n)
    A[rng.random(A.shape) < 0.1] = np.nan
    return A


def _pandas_categorical(booster: lgb.Booster) -> list[list[Any]]:
    return list(booster.pandas_categorical or [])


def _host_features() -> str:
    import llvmlite.binding as llvm

    try:
        return str(llvm.get_host_cpu_features().flatten())
    except RuntimeError:  # LLVM cannot detect them on this host
        return ""


def _target_machine() -> Any:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=_host_features(), reloc="pic", codemodel="large"
    )


def _compile_object(model_file: Path) -> bytes:
    """The native object code of a LightGBM text model's raw-score function."""
    try:
        import llvmlite.binding as llvm
        import llvmlite.ir
        from lleaves.compiler.ast import parse_to_ast
        from lleaves.compiler.codegen import gen_forest
    except ImportError as exc:
        raise CompileError(f"lleaves is not installed ({exc.name})") from exc
    if not hasattr(llvm, "PassBuilder"):
        raise CompileError(f"llvmlite {importlib.metadata.version('llvmlite')} is older than 0.45")
    forest = parse_to_ast(str(model_file))
    forest.raw_score = True
    ir_module = llvmlite.ir.Module(name="forest")
    gen_forest(forest, ir_module, _BLOCK_SIZE, _ROOT_FUNCTION, True)
    ir_module.triple = llvm.get_process_triple()
    module = llvm.parse_assembly(str(ir_module))
    module.verify()
    machine = _target_machine()
    tuning = llvm.PipelineTuningOptions(speed_level=3)
    passes = llvm.PassBuilder(machine, tuning)
    passes.getModulePassManager().run(module, passes)
    engine = llvm.create_mcjit_compiler(module, machine)
    emitted: list[bytes] = []
    engine.set_object_cache(notify_func=lambda _module, data: emitted.append(bytes(data)))
    engine.finalize_object()
    if not emitted:
        raise CompileError("LLVM emitted no object code")
    return emitted[0]


def _load_object(path: Path, data: bytes, n_features: int) -> _Library:
    from ctypes import CFUNCTYPE, POINTER, c_double, c_int32

    import llvmlite.binding as llvm

    machine = _target_machine()
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), machine)
    engine.set_object_cache(getbuffer_func=lambda _module: data)
    engine.finalize_object()
    address = engine.get_function_address(_ROOT_FUNCTION)
    if not address:
        raise CompileError(f"{path.name} has no {_ROOT_FUNCTION} function")
    entry = CFUNCTYPE(None, POINTER(c_double), POINTER(c_double), c_int32, c_int32)(address)
    return _Library(path, engine, entry, n_features)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _read_valid(path: Path, key: str) -> bytes | None:
    """The library's bytes when its sidecar names `key` and their checksum matches."""
    try:
        meta = json.loads(_sidecar(path).read_text())
        data = path.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("key") != key:
        return None
    if meta.get("sha256") != hashlib.sha256(data).hexdigest():
        return None
    return data


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX): a second process compiling the same folder waits."""
    try:
        import fcntl
    except ImportError:  # not POSIX: atomic writes alone keep the files whole
        yield
        return
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class CompiledScoring:
    """What a model holding a `booster` gains from compiled trees: `scorer` (plain LightGBM
    until `use_trees`), `backend` and `use_trees`. Shared by the no-show predictor and the
    ranker; each names itself (`TREES_LABEL`) and, when it scores a column subset, says which
    (`_tree_columns`)."""

    TREES_LABEL = "model"
    booster: lgb.Booster
    _scorer: TreeScorer | None
    _attribution: Any

    def _tree_columns(self) -> tuple[str, ...] | None:
        return None

    @property
    def scorer(self) -> TreeScorer:
        """What computes raw scores: the serving set-up's (`use_trees`), else plain LightGBM."""
        if self._scorer is None:
            self._scorer = LightGBMScorer(self.booster)
        return self._scorer

    @property
    def backend(self) -> str:
        """The active backend: "lleaves" (compiled trees) or "lightgbm"."""
        return self.scorer.backend

    def use_trees(self, settings: TreeSettings, model_file: Path) -> None:
        """Score with compiled trees where available (`scorer_for`; LightGBM otherwise, with
        one log line saying why), and bound every model call's threads. ValueError when
        `settings.backend` is "lleaves" and they are unavailable."""
        label, columns = self.TREES_LABEL, self._tree_columns()
        self._scorer = scorer_for(self.booster, model_file, settings, label, columns)
        self._attribution = None
