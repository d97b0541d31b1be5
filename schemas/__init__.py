"""Schemas: the single source of truth for every artifact's columns, dtypes and invariants."""
