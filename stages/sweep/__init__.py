"""Parameter sweeps and walk-forward validation: the pure parts (no Prefect, no Dask)."""
