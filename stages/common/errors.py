"""Errors a user can act on. Each carries a message naming the file/key and what is wrong.

The command lines turn these into a message on stderr and a non-zero exit code; anything
else is a bug and keeps its traceback.
"""
from __future__ import annotations


class TrendflowError(Exception):
    """Base: a problem with the user's input, config or saved files (not a bug)."""

    exit_code = 2


class ConfigError(TrendflowError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


class DataError(TrendflowError):
    """Market data cannot be used as given (missing columns, bad rows, no symbols...)."""


class SchemaError(TrendflowError):
    """An artifact does not match its schema, on write or on read."""


class ArtifactMissingError(TrendflowError):
    """An input artifact a stage needs is not there (run the stage that writes it first)."""


class IntegrityError(TrendflowError):
    """An artifact's content does not match the hash recorded in the manifest."""


class SnapshotError(TrendflowError):
    """A portfolio snapshot is missing, damaged, or does not match the run."""


class TransientIOError(TrendflowError):
    """An I/O fault worth retrying (a locked file, a network share hiccup)."""

    exit_code = 3


class FolderBusyError(TrendflowError):
    """Another process is writing the same folder (one writer per folder)."""


class FileSystemError(TrendflowError):
    """The file system refuses a path as given: read-only, permission denied, not a directory."""


class UnknownPositionError(TrendflowError):
    """The executed book holds a position the model does not know (accept it with `trendflow reconcile --accept`)."""
