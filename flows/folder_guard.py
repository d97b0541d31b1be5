"""A daily run spans two stages; each commits its own files atomically, but a run that fails in
the trading stage must not leave the signal stage's new files behind (nor the ones it retired, such
as the stale `signals_output.csv`). `preserved(folder)` keeps hard links to the folder's files while
the run goes on and, if the run raises, puts every earlier file back and removes the new ones.

Hard links cost nothing to make (every stage replaces files by rename, so the linked inode keeps the
old bytes); a file system without them gets copies. Sub-folders (logs/, execution/, demo_data/) are
left alone: the execution database records what a broker was sent and is never rolled back.
"""
from __future__ import annotations

import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger("trendflow.flow")
KEEP_PREFIX = ".trendflow-keep-"


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@contextmanager
def preserved(folder: Path) -> Iterator[None]:
    """On an exception inside the block, restore `folder`'s top-level files as they were before it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keep = folder / f"{KEEP_PREFIX}{os.getpid()}"
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir()
    before = _files(folder)
    try:
        for name in before:
            link_or_copy(folder / name, keep / name)
        yield
    except BaseException:
        _restore(folder, keep, before)
        raise
    finally:
        shutil.rmtree(keep, ignore_errors=True)


def _files(folder: Path) -> set[str]:
    """The artifacts: top-level files, not hidden ones (a folder lock, staging journals are the writers' own)."""
    return {p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def _restore(folder: Path, keep: Path, before: set[str]) -> None:
    restored, removed = [], []
    for name in _files(folder) - before:
        (folder / name).unlink()
        removed.append(name)
    for name in sorted(before):
        saved, current = keep / name, folder / name
        if current.exists() and os.path.samestat(saved.stat(), current.stat()):
            continue  # never replaced
        os.replace(saved, current)
        restored.append(name)
    if restored or removed:
        log.warning("run failed: restored %s and removed %s in %s", restored or "nothing", removed or "nothing", folder)
