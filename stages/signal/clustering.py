"""Correlation clusters of daily returns, refreshed every `update_frequency` days.

Distance sqrt(2(1 - rho)) (0 for identical, sqrt(2) for unrelated, 2 for opposite), scipy
hierarchical linkage, cut at `distance_threshold`. A refresh on day r uses the returns of the
`correlation_window` days ending at r (nothing later); its clusters hold until the next refresh.
Ids are stable: each new cluster takes the id of the old cluster it overlaps most.
"""
from __future__ import annotations

import logging
from collections import Counter

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

log = logging.getLogger(__name__)

MIN_COVERAGE = 0.8  # share of the window's days a symbol must have traded to be clustered


def correlation_distance(rho: np.ndarray) -> np.ndarray:
    """sqrt(2 (1 - rho)), clipped against rounding below zero."""
    return np.sqrt(np.clip(2.0 * (1.0 - rho), 0.0, 4.0))


def cluster_labels(returns: np.ndarray, threshold: float, method: str) -> np.ndarray:
    """Raw cluster labels (1..k) for the columns of a (days x symbols) return window without NaN."""
    n = returns.shape[1]
    if n == 1:
        return np.ones(1, dtype=int)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.corrcoef(returns, rowvar=False)
    rho = np.nan_to_num(rho, nan=0.0)  # a flat series correlates with nothing
    np.fill_diagonal(rho, 1.0)
    dist = correlation_distance(rho)
    np.fill_diagonal(dist, 0.0)
    tree = linkage(squareform(dist, checks=False), method=method)
    return fcluster(tree, t=threshold, criterion="distance")


def stable_ids(labels: np.ndarray, members: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Give each new cluster the old id it shares most symbols with (largest overlaps first);
    clusters with no old counterpart take the smallest free id, in order of their first member."""
    assigned = np.full(previous.shape, -1)
    clusters = sorted(set(labels.tolist()), key=lambda lab: int(np.flatnonzero(labels == lab)[0]))
    overlaps = []
    for lab in clusters:
        old = previous[members[labels == lab]]
        for old_id, count in Counter(old[old >= 0].tolist()).items():
            overlaps.append((-count, old_id, clusters.index(lab), lab))
    taken_old, mapping = set(), {}
    for _, old_id, _, lab in sorted(overlaps):
        if lab not in mapping and old_id not in taken_old:
            mapping[lab] = old_id
            taken_old.add(old_id)
    for lab in clusters:
        if lab not in mapping:
            used = set(mapping.values())
            mapping[lab] = next(i for i in range(len(used) + 1) if i not in used)
    assigned[members] = np.array([mapping[lab] for lab in labels])
    return assigned


def rolling_clusters(
    returns: np.ndarray, window: int, update_frequency: int, threshold: float, method: str = "average"
) -> np.ndarray:
    """Cluster id per (day, symbol) on the calendar grid; -1 before the first refresh or when a
    symbol lacks data. Refreshes on days window-1, window-1+f, ...; constant between refreshes."""
    n_days, n_sym = returns.shape
    out = np.full((n_days, n_sym), -1, dtype=np.int64)
    current = np.full(n_sym, -1, dtype=np.int64)
    refresh_days = range(window - 1, n_days, update_frequency)
    for r in refresh_days:
        block = returns[r - window + 1:r + 1]
        coverage = (~np.isnan(block)).mean(axis=0)
        members = np.flatnonzero(coverage >= MIN_COVERAGE)
        if len(members) == 0:
            current = np.full(n_sym, -1, dtype=np.int64)
        else:
            labels = cluster_labels(np.nan_to_num(block[:, members]), threshold, method)
            current = stable_ids(labels, members, current)
        out[r:r + update_frequency] = current
        sizes = Counter(current[current >= 0].tolist())
        log.debug("Clustering refresh at day %d: %d clusters, distribution: %s", r, len(sizes), dict(sorted(sizes.items())))
    if len(refresh_days):
        final = Counter(current[current >= 0].tolist())
        log.info("Clustering complete: %d clusters, distribution: %s (%d refreshes)", len(final), dict(sorted(final.items())), len(refresh_days))
    return out
