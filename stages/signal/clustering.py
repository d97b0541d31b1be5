"""Correlation clusters of daily returns, refreshed every `update_frequency` days.

Distance sqrt(2(1 - rho)) (0 for identical, sqrt(2) for unrelated, 2 for opposite), scipy
hierarchical linkage, cut at `distance_threshold`. A refresh on day r uses the returns of the
`correlation_window` days ending at r (nothing later); its clusters hold until the next refresh.
Ids are stable: each new cluster takes the id of the old cluster it overlaps most.

The refreshes run one after the other, on one BLAS thread. On a thread pool (they are independent
until the id matching) only the correlation products ran beside each other -- scipy 1.17's linkage
holds the GIL -- so two threads saved 0.03-0.07 s of wall time at 500 symbols x 10 years and cost
0.15 CPU-s more (0.63-0.72 vs 0.44-0.61 CPU-s, alternated); BLAS threads inside a 60-day correlation
only spin (a 500-symbol run took twice the CPU time with them).
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import sys
import threading
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

MIN_COVERAGE = 0.8  # share of the window's days a symbol must have traded to be clustered


def correlation_distance(rho: np.ndarray) -> np.ndarray:
    """sqrt(2 (1 - rho)), clipped against rounding below zero."""
    return np.sqrt(np.clip(2.0 * (1.0 - rho), 0.0, 4.0))


def correlation_matrix(returns: np.ndarray) -> np.ndarray:
    """Pearson correlation of the columns; a flat column correlates 0 with everything (1 with itself)."""
    centred = returns - returns.mean(axis=0)
    norm = np.sqrt((centred**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (centred.T @ centred) / np.outer(norm, norm)
    rho[~np.isfinite(rho)] = 0.0
    np.fill_diagonal(rho, 1.0)
    return np.clip(rho, -1.0, 1.0)


def cluster_labels(returns: np.ndarray, threshold: float, method: str) -> np.ndarray:
    """Raw cluster labels (1..k) for the columns of a (days x symbols) return window without NaN."""
    if returns.shape[1] == 1:
        return np.ones(1, dtype=int)
    rho = correlation_matrix(returns)
    condensed = correlation_distance(rho[_upper_triangle(len(rho))])  # scipy's squareform order: i < j, row by row
    linkage, fcluster = _hierarchy()
    return fcluster(linkage(condensed, method=method), t=threshold, criterion="distance")


@lru_cache(maxsize=4)
def _upper_triangle(n: int) -> np.ndarray:
    """Mask of the cells above the diagonal of an n x n matrix: indexing with it reads them row by row
    (the order of np.triu_indices(n, 1)), without building two index arrays at every refresh."""
    return np.triu(np.ones((n, n), dtype=bool), k=1)


_hierarchy_lock = threading.Lock()
_hierarchy_functions: tuple[Callable, Callable] | None = None


def _hierarchy() -> tuple[Callable, Callable]:
    """(linkage, fcluster) as scipy.cluster.hierarchy computes them for a condensed distance vector
    and the 'distance' criterion, from its own C routines, loaded once without importing the
    scipy.cluster package: that import pulls in scipy.spatial, linalg and special (0.3-1 s of the
    signal command, for two functions). For a finite condensed vector of n (n - 1) / 2 distances,
    linkage is `_hierarchy.nn_chain(y, n, code)` ('single': `mst_single_linkage(y, n)`) and fcluster
    `_hierarchy.cluster_dist(Z, T, t, n)` into int32 zeros, so the labels are the same bits. When
    scipy.cluster is already loaded, or this scipy lays out its files otherwise, the public
    functions are used."""
    global _hierarchy_functions
    with _hierarchy_lock:  # callers may be threads (e.g. a sweep); an extension module is loaded once
        if _hierarchy_functions is None:
            _hierarchy_functions = _load_hierarchy()
        return _hierarchy_functions


def _load_hierarchy() -> tuple[Callable, Callable]:
    own = _c_hierarchy() if "scipy.cluster" not in sys.modules else None
    if own is not None:
        return own
    from scipy.cluster.hierarchy import fcluster, linkage

    return linkage, fcluster


def _c_hierarchy() -> tuple[Callable, Callable] | None:
    """linkage and fcluster on scipy.cluster's C routines (see `_hierarchy`); None if they cannot be loaded."""
    try:
        import scipy

        folder = Path(scipy.__file__).parent / "cluster"
        path = next(folder / f"_hierarchy{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES
                    if (folder / f"_hierarchy{suffix}").exists())
        spec = importlib.util.spec_from_file_location("scipy.cluster._hierarchy", path)
        core = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(core)
        nn_chain, single, cluster_dist = core.nn_chain, core.mst_single_linkage, core.cluster_dist
    except (ImportError, StopIteration, AttributeError, OSError):
        return None
    codes = {"single": 0, "complete": 1, "average": 2, "ward": 5}  # scipy's _LINKAGE_METHODS

    def linkage(y: np.ndarray, method: str) -> np.ndarray:
        y = np.ascontiguousarray(y, dtype=np.float64)
        n = int(np.ceil(np.sqrt(len(y) * 2)))
        if n * (n - 1) // 2 != len(y) or method not in codes:
            raise ValueError(f"linkage: {len(y)} distances is not a condensed matrix, or method {method!r} unknown")
        if not np.all(np.isfinite(y)):
            raise ValueError("The condensed distance matrix must contain only finite values.")
        return single(y, n) if method == "single" else nn_chain(y, n, codes[method])

    def fcluster(z: np.ndarray, t: float, criterion: str) -> np.ndarray:
        if criterion != "distance":
            raise ValueError(f"fcluster: only the 'distance' criterion here, not {criterion!r}")
        labels = np.zeros(len(z) + 1, dtype="i")
        cluster_dist(np.ascontiguousarray(z, dtype=np.float64), labels, float(t), len(z) + 1)
        return labels

    return linkage, fcluster


def stable_ids(labels: np.ndarray, members: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Give each new cluster the old id it shares most symbols with (largest overlaps first, ties to
    the smaller old id, then to the cluster whose first member comes first); clusters with no old
    counterpart take the smallest free ids, in order of their first member."""
    assigned = np.full(previous.shape, -1, dtype=np.int64)
    # relabel clusters 0..k-1 by the position of their first member
    uniq, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order_of = np.empty(len(uniq), dtype=np.int64)
    order_of[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    lab = order_of[inverse.ravel()]
    k = len(uniq)
    old = previous[members]
    has_old = old >= 0
    mapping = np.full(k, -1, dtype=np.int64)
    if has_old.any():
        span = int(old.max()) + 1
        pairs, counts = np.unique(lab[has_old] * span + old[has_old], return_counts=True)
        pair_lab, pair_old = pairs // span, pairs % span
        taken = np.zeros(span, dtype=bool)
        for i in np.lexsort((pair_lab, pair_old, -counts)):  # greedy: largest overlap first
            if mapping[pair_lab[i]] < 0 and not taken[pair_old[i]]:
                mapping[pair_lab[i]] = pair_old[i]
                taken[pair_old[i]] = True
    unmatched = np.flatnonzero(mapping < 0)
    if len(unmatched):
        used = np.zeros(k + len(unmatched) + int(mapping.max(initial=-1)) + 1, dtype=bool)
        used[mapping[mapping >= 0]] = True
        mapping[unmatched] = np.flatnonzero(~used)[: len(unmatched)]
    assigned[members] = mapping[lab]
    return assigned


def _refresh_members(returns: np.ndarray, r: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    block = returns[r - window + 1:r + 1]
    members = np.flatnonzero((~np.isnan(block)).mean(axis=0) >= MIN_COVERAGE)
    return block, members


def rolling_clusters(
    returns: np.ndarray, window: int, update_frequency: int, threshold: float, method: str = "average",
    *, offset: int = 0, resume: tuple[int, np.ndarray] | None = None,
) -> np.ndarray:
    """Cluster id per (day, symbol) on the calendar grid; -1 before the first refresh or when a
    symbol lacks data. Refreshes on days window-1, window-1+f, ...; constant between refreshes.

    Day numbers count from the first day of the whole calendar; `returns` starts at day `offset`.
    A step passes `resume` = (first day to label, the ids in force before it): the rows of `returns`
    before that day are history (at least window-1 of them) and only the days from it are returned."""
    n_days, n_sym = returns.shape
    first_day, current = (offset, np.full(n_sym, -1, dtype=np.int64)) if resume is None else resume
    emit = first_day - offset
    out = np.empty((n_days - emit, n_sym), dtype=np.int64)
    out[:] = current
    refresh_days = [r - offset for r in range(window - 1, offset + n_days, update_frequency) if r >= first_day]

    def labels_at(r: int) -> tuple[np.ndarray, np.ndarray]:
        block, members = _refresh_members(returns, r, window)
        if len(members) == 0:
            return members, members
        return members, cluster_labels(np.nan_to_num(block[:, members]), threshold, method)

    with threadpool_limits(limits=1, user_api="blas"):
        results = [labels_at(r) for r in refresh_days]
    for r, (members, labels) in zip(refresh_days, results):
        if len(members) == 0:
            current = np.full(n_sym, -1, dtype=np.int64)
        else:
            current = stable_ids(labels, members, current)
        out[r - emit:r - emit + update_frequency] = current
        if log.isEnabledFor(logging.DEBUG):
            sizes = Counter(current[current >= 0].tolist())
            log.debug("Clustering refresh at day %d: %d clusters, distribution: %s", r + offset, len(sizes), dict(sorted(sizes.items())))
    if refresh_days:
        final = Counter(current[current >= 0].tolist())
        log.info("Clustering complete: %d clusters, distribution: %s (%d refreshes)", len(final), dict(sorted(final.items())), len(refresh_days))
    return out
