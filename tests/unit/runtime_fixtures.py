"""A loaded Runtime over its own fresh SQLite store of a world (shared by the service tests)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from serving.runtime import Runtime
from serving.store import Store


def loaded_runtime(folder: Path, world: Path, bundles: dict[str, Path], as_of: datetime) -> Runtime:
    """The world loaded into `folder/referral.db`, served with the ranker and no-show bundles."""
    store = Store(f"sqlite:///{folder / 'referral.db'}")
    store.create()
    store.load_dataset(world)
    rt = Runtime(store.url, bundles["ranker"], bundles["no_show"], now=as_of, store=store)
    assert rt.load(), rt.not_ready_reason
    return rt
