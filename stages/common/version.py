"""trendflow's version, as the source tree that runs says it.

Not the installed distribution's metadata (importlib.metadata): that belongs to whichever checkout
was pip-installed (another one, in a worktree), and is absent while `pip install -e` reinstalls it,
so a report naming it changed bytes with the environment. Kept equal to pyproject.toml's
[project] version by a test (tests/test_reporting_attribution.py)."""

VERSION = "0.1.0"
