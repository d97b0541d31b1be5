"""The evening run as a person starts it: `trendflow daily` for 100 ETFs from a saved evening, as a
whole process (imports, checks, Prefect client, both stages, the flow's records), against a
Prefect server that is already up; then the two stage commands alone (`trendflow signal` and
`trendflow trade` for that day, no Prefect). Prints wall time, time to the first line of output,
and peak RSS of each process, and the machine's load average.

Targets (issue 14): daily <= 3 s, the stage commands <= 1.5 s together.

The daily run and the stage commands are measured twice: each in its own process (TRENDFLOW_WARM=0),
and run by the warm processes (flows/warm.py) that this script starts in a temporary folder and
stops at the end: each command then runs in a fork of a process that has imported its modules
(for daily, Prefect and the flow too) once. For those the
CPU time is the caller's plus the forked child's (TRENDFLOW_WARM_STATS), and the peak RSS the
child's, which counts the pages it shares with the warm process.

Two evenings are measured, because one in `clustering.update_frequency` (20) sessions refreshes the
correlation clusters and only that evening imports scipy.cluster (0.3-0.4 s) and runs the linkage:
the demo's last session (for the 100-symbol demo such a refresh day) and the session before it
(then an ordinary one); each says which it is.

    python benchmarks/bench_daily.py [--symbols 100] [--repeat 5] [--evenings last,before-last]

The server: PREFECT_API_URL if set, else the shared local server of PREFECT_HOME (started here if
it is not running, and then stopped again at the end unless --keep-server).

The project's bytecode is compiled first (`compileall`, into the checkout's ignored __pycache__
folders), as an installed or once-run checkout has it: with PYTHONDONTWRITEBYTECODE=1 and no
bytecode (a fresh worktree) every measured process compiled the project's ~16,000 lines from source
first (0.05-0.15 CPU-s of each process, measured), which no user's evening pays.
"""
from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the project on sys.path)
from _common import demo_folder

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("flows", "stages", "schemas", "trendflow")


def run_process(argv: list[str], env: dict) -> tuple[float, float, float, float, int, str]:
    """(wall s, seconds to the first line of stdout, peak RSS MiB, CPU s (user + system), exit code,
    output) of one process. The CPU time moves far less with the machine's load than the wall time."""
    t0 = time.perf_counter()
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = None
    lines = []
    for line in process.stdout:
        if first is None:
            first = time.perf_counter() - t0
        lines.append(line)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - t0
    process.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return wall, first if first is not None else wall, usage.ru_maxrss / 1024, cpu, process.returncode, "".join(lines)


def prices_up_to(prices: Path, folder: Path, day: str) -> Path:
    """A copy of the price folder `prices` without the rows after `day`."""
    import pandas as pd

    folder.mkdir()
    for path in prices.glob("*.csv"):
        frame = pd.read_csv(path, dtype=str)
        frame[frame.iloc[:, 0] <= day].to_csv(folder / path.name, index=False)
    return folder


def saved_evening(prices: Path, folder: Path) -> tuple[str, str]:
    """The folder a daily run continues from: yesterday evening's run with the same config on the
    prices as they were yesterday (so its signal state is used, as it is night after night)."""
    import pandas as pd

    from stages.common.config import load_config
    from stages.signal import run_signal_stage
    from stages.trading import run_trading_stage

    dates = sorted(pd.read_csv(next(prices.glob("*.csv")), usecols=[0]).iloc[:, 0].unique())
    last, before = str(dates[-1])[:10], str(dates[-2])[:10]
    yesterday = prices_up_to(prices, folder.parent / "prices_yesterday", before)
    config = load_config(None, [])
    run_signal_stage(config, yesterday, folder)
    run_trading_stage(config, folder, folder)
    return last, before


def is_refresh_day(prices: Path, day: str) -> bool:
    """Whether the signal stage refreshes the clusters on `day` (stages/signal/clustering.py: days
    window-1, window-1+f, ... of the calendar)."""
    import pandas as pd

    from stages.common.config import load_config

    c = load_config(None, []).clustering
    days = sorted({d for path in prices.glob("*.csv") for d in pd.read_csv(path, usecols=[0]).iloc[:, 0].astype(str)})
    r = days.index(day)
    return r >= c.correlation_window - 1 and (r - (c.correlation_window - 1)) % c.update_frequency == 0


def run_stage(argv: list[str], env: dict) -> tuple[float, float, float, float, int, str]:
    """run_process for a command; when run by a warm process (env names its folder), the CPU time
    and peak RSS include the forked child that ran it, and a command not run warm is an error."""
    stats = Path(env["TRENDFLOW_WARM_STATS"]) if "TRENDFLOW_WARM_STATS" in env else None
    if stats is not None:
        stats.unlink(missing_ok=True)
    wall, first, rss, cpu, code, out = run_process(argv, env)
    if stats is not None:
        record = json.loads(stats.read_text())
        if not record["warm"]:
            return wall, first, rss, cpu, 1, out + f"\nnot run by the warm process: {record['reason']}"
        rss, cpu = record["max_rss_mib"], cpu + record["cpu_s"]
    return wall, first, rss, cpu, code, out


def measure(prices: Path, tmp: Path, repeat: int, env: dict, label: str, warm_env: dict | None) -> int:
    """`repeat` x (daily; signal + trade) from a saved evening on `prices`, alternating; prints the summaries."""
    evening = tmp / "evening"
    last, _ = saved_evening(prices, evening)
    refresh = is_refresh_day(prices, last)
    print(f"\nevening {last} ({label}; {'a cluster refresh day' if refresh else 'no cluster refresh'}), from the saved "
          f"evening before it; {repeat} runs each")
    python = [sys.executable, "-m", "flows.cli"]
    daily, stages, signal, trade = [], [], [], []
    warm_daily, warm_stages, warm_signal, warm_trade = [], [], [], []
    own = {**env, "TRENDFLOW_WARM": "0"}
    modes = [("", own, (daily, signal, trade, stages))]
    if warm_env is not None:
        modes.append(("w", warm_env, (warm_daily, warm_signal, warm_trade, warm_stages)))
    for k in range(repeat):
        for suffix, mode_env, (to_daily, to_signal, to_trade, to_both) in modes:
            work = tmp / f"run{k}{suffix}"
            shutil.copytree(evening, work)
            *figures, code, out = run_stage(python + ["daily", "--data", str(prices), "--out", str(work)], mode_env)
            if code != 0:
                print(out)
                return code
            to_daily.append(tuple(figures))
            work = tmp / f"stages{k}{suffix}"
            shutil.copytree(evening, work)
            s = run_stage(python + ["signal", "--data", str(prices), "--out", str(work), "--as-of-date", last], mode_env)
            t = run_stage(python + ["trade", "--out", str(work), "--as-of-date", last], mode_env)
            for result in (s, t):
                if result[4] != 0:
                    print(result[5])
                    return result[4]
            to_signal.append(s[:4])
            to_trade.append(t[:4])
            to_both.append((s[0] + t[0], s[1], max(s[2], t[2]), s[3] + t[3]))
    summary("trendflow daily (server up)", daily, 3.0)
    summary("trendflow signal --as-of-date D", signal, None)
    summary("trendflow trade --as-of-date D", trade, None)
    summary("both stage commands", stages, 1.5)
    if warm_env is not None:
        summary("daily, warm processes up", warm_daily, 3.0)
        summary("signal, warm process up", warm_signal, None)
        summary("trade, warm process up", warm_trade, None)
        summary("both, warm process up", warm_stages, 1.5)
    print(f"load average now {os.getloadavg()[0]:.2f}")
    return 0


def summary(label: str, runs: list[tuple[float, float, float, float]], target: float | None) -> None:
    walls = [r[0] for r in runs]
    verdict = "" if target is None else ("  (target <= %.1f s: %s)" % (target, "met" if statistics.median(walls) <= target else "NOT met"))
    print(f"{label:<33} wall median {statistics.median(walls):5.2f} s (min {min(walls):5.2f}, max {max(walls):5.2f}); "
          f"CPU median {statistics.median(r[3] for r in runs):4.2f} s; first line {statistics.median(r[1] for r in runs):4.2f} s; "
          f"peak RSS {max(r[2] for r in runs):4.0f} MiB{verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep-server", action="store_true", help="leave a server started here running")
    parser.add_argument("--no-warm", action="store_true", help="skip the runs by warm processes (flows/warm.py)")
    parser.add_argument("--evenings", default="last,before-last",
                        help="which evenings: the demo's last session and/or the one before it")
    args = parser.parse_args()

    os.environ.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TRENDFLOW_WEBHOOK_URL": ""}
    started_here = False
    if not os.environ.get("PREFECT_API_URL"):
        from flows.local_server import ensure_server, running_url

        started_here = running_url() is None
        env["PREFECT_API_URL"] = ensure_server()
    print(f"Prefect server {env['PREFECT_API_URL']}; load average before {os.getloadavg()[0]:.2f} "
          f"({os.cpu_count()} CPUs)")

    compiled = all(compileall.compile_dir(ROOT / package, quiet=1) for package in PROJECT_PACKAGES)
    print(f"project bytecode {'compiled' if compiled else 'NOT all compiled'} before measuring "
          f"(PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r})")
    prices = demo_folder(args.symbols)
    with tempfile.TemporaryDirectory(prefix="bench_daily_") as tmp:
        warm_env = None
        if not args.no_warm:
            warm_env = {**env, "TRENDFLOW_WARM_DIR": str(Path(tmp) / "warm"),
                        "TRENDFLOW_WARM_STATS": str(Path(tmp) / "warm-stats.json")}
            warm_env.pop("TRENDFLOW_WARM", None)
        try:
            if warm_env is not None:
                started = subprocess.run([sys.executable, "-m", "flows.cli", "warm", "start"], cwd=ROOT, env=warm_env,
                                         capture_output=True, text=True)
                print(started.stdout.strip() or started.stderr.strip())
                if started.returncode:
                    return started.returncode
            code = measure_evenings(args, parser, prices, Path(tmp), env, warm_env)
        finally:
            if warm_env is not None:
                subprocess.run([sys.executable, "-m", "flows.cli", "warm", "stop"], cwd=ROOT, env=warm_env,
                               capture_output=True)
        if code:
            return code
    print(f"load average after {os.getloadavg()[0]:.2f}")
    if started_here and not args.keep_server:
        from flows.local_server import stop_server

        stop_server()
    return 0


def measure_evenings(args, parser, prices: Path, tmp: Path, env: dict, warm_env: dict | None) -> int:
    """Each evening asked for: the demo's last session, and/or the one before it."""
    for evening in args.evenings.split(","):
        folder = tmp / evening
        folder.mkdir()
        if evening == "last":
            source = prices
        elif evening == "before-last":
            import pandas as pd

            dates = sorted(pd.read_csv(next(prices.glob("*.csv")), usecols=[0]).iloc[:, 0].astype(str).unique())
            source = prices_up_to(prices, folder / "prices", dates[-2])
        else:
            parser.error(f"--evenings: unknown evening {evening!r} (last, before-last)")
        code = measure(source, folder, args.repeat, env, evening, warm_env)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
