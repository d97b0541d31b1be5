"""The whole job against vectorbt: the same folder of per-symbol CSVs, each tool run as processes.

trendflow: its three stage commands (`trendflow signal --data F`, `trendflow trade`, `trendflow
report`) with default settings, each its own process, as a user runs them. vectorbt 1.2: one
process doing a simplified like-for-like job -- read the CSVs, MACD(12, 26, 9) trend filter,
20/60/120-day volatility-adjusted momentum (weights 0.3/0.4/0.3), top 10 by score among MACD-up
symbols, inverse-volatility target weights summing to 0.95 (each at most 0.15), rebalanced every 5
sessions at the next open, 100-share lots, 3 bp commission and 5 bp slippage, then `pf.stats()`,
the order records as CSV and the equity curve as Parquet. trendflow does more (KAMA, ADX, ATR
stops, clusters, a report with charts); vectorbt's numba cache is warm (one untimed run first,
cache in the benchmark folder, not in the installed package).

Runs alternate (trendflow, vectorbt, trendflow, vectorbt, ...) so both see the same load; each
figure is the median over rounds. Wall time, CPU time (user + sys of the process, from wait4) and
peak RSS per process; the job's peak RSS is its largest process. The machine's load average is
printed beside every round: on a shared box the ratios are the figures to quote.

    .venv/bin/python benchmarks/bench_vs_vectorbt.py                    # 500 x 10y, 2 rounds
    .venv/bin/python benchmarks/bench_vs_vectorbt.py --rounds 3 --symbols 100
    .venv/bin/python benchmarks/bench_vs_vectorbt.py --scaling          # trendflow: 100/500/2000 x 10y, 500 x 20y

Needs the `bench` extra (vectorbt) for the comparison; `--scaling` runs trendflow alone.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import _common  # noqa: F401  (puts the project on sys.path)
from _common import CACHE

STAGES = (("signal", ["--data", "{data}"]), ("trade", []), ("report", []))


@dataclass(frozen=True)
class Usage:
    """One process: wall seconds, CPU seconds (user + sys), peak RSS in MiB."""

    wall: float
    cpu: float
    rss: float


def data_folder(n_symbols: int, years: float) -> Path:
    """The cached demo folder, generated in a child process: a child's peak RSS counts its parent's
    memory at fork/exec, so this process must never grow (generating 2,000 symbols takes 1.7 GB)."""
    code = f"import _common; print(_common.demo_folder({n_symbols}, {years}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True, check=True)
    return Path(done.stdout.strip().splitlines()[-1])


def run_process(argv: list[str], env: dict[str, str] | None = None) -> Usage:
    """Run `argv` to completion and take its own resource usage (wait4: this child only).

    Children may write bytecode caches (a sandbox's PYTHONDONTWRITEBYTECODE=1 is dropped), as on any
    user's machine: the untimed warm-up run compiles each tool's modules once."""
    env = {k: v for k, v in (env or os.environ).items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty child must never block on a full pipe
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{err.read().decode(errors='replace')[-3000:]}")
    return Usage(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def trendflow_command() -> list[str]:
    """`python -m flows.cli`, which enters as the installed `trendflow` script does (`flows.cli.entry`:
    its GC thresholds, one BLAS thread and quick exit for the stage commands; a development venv's
    script may call `main()` instead and measure none of them). TRENDFLOW_BENCH_CODE=DIR runs the
    code in DIR the same way (e.g. an older commit unpacked with `git archive`, for a before/after
    comparison)."""
    if os.environ.get("TRENDFLOW_BENCH_CODE"):
        return [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv.pop(1)); from flows.cli import entry; "
                "entry()", os.environ["TRENDFLOW_BENCH_CODE"]]
    return [sys.executable, "-m", "flows.cli"]


def trendflow_job(data: Path, out: Path, extra: list[str]) -> dict[str, Usage]:
    """The three stage commands, each a process, in a fresh output folder."""
    shutil.rmtree(out, ignore_errors=True)
    usages = {}
    for name, args in STAGES:
        argv = trendflow_command() + [name, *[a.format(data=data) for a in args], "--out", str(out), "--log-level", "WARNING", *extra]
        usages[name] = run_process(argv)
    return usages


def vectorbt_job_process(data: Path, out: Path) -> Usage:
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(CACHE / "numba_cache"))
    return run_process([sys.executable, __file__, "--vectorbt-job", str(data), str(out)], env=env)


def vectorbt_job(data: Path, out: Path) -> None:
    """The vectorbt side, in its own process (see the module docstring)."""
    import numpy as np
    import pandas as pd
    import vectorbt as vbt

    out.mkdir(parents=True, exist_ok=True)
    frames = {p.name[:-4]: pd.read_csv(p, index_col="date", parse_dates=["date"]) for p in sorted(data.glob("*.csv"))}
    close = pd.DataFrame({s: f["close"] for s, f in frames.items()}).sort_index()
    open_ = pd.DataFrame({s: f["open"] for s, f in frames.items()}).sort_index()

    macd = vbt.MACD.run(close, fast_window=12, slow_window=26, signal_window=9, macd_ewm=True, signal_ewm=True)
    trend_up = (macd.macd > macd.signal).to_numpy()
    log_ret = np.log(close).diff()
    score = 0.0
    for window, weight in ((20, 0.3), (60, 0.4), (120, 0.3)):
        score = score + weight * close.pct_change(window, fill_method=None) / (log_ret.rolling(window).std() * np.sqrt(window))
    rank = score.where(trend_up).rank(axis=1, ascending=False).to_numpy()
    inverse_vol = 1.0 / (log_ret.rolling(20).std().to_numpy() * np.sqrt(252))
    chosen = np.where(rank <= 10, inverse_vol, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        target = np.minimum(0.95 * chosen / chosen.sum(axis=1, keepdims=True), 0.15)
    rebalance = (np.arange(len(close)) % 5 == 0)[:, None]
    size = pd.DataFrame(np.where(rebalance, np.nan_to_num(target), np.nan), index=close.index, columns=close.columns)

    pf = vbt.Portfolio.from_orders(
        close.ffill(), size=size.shift(1), size_type="targetpercent", price=open_.ffill(), fees=0.0003, slippage=0.0005,
        size_granularity=100, group_by=True, cash_sharing=True, call_seq="auto", init_cash=1_000_000.0, freq="1D",
    )
    stats = pf.stats()
    pf.orders.records_readable.to_csv(out / "orders.csv", index=False)
    pf.value().to_frame("equity").to_parquet(out / "equity.parquet")
    stats.astype(str).to_frame("value").to_csv(out / "stats.csv")


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def compare(args: argparse.Namespace) -> None:
    data = data_folder(args.symbols, args.years)
    work = Path(tempfile.mkdtemp(prefix="tf_vs_vbt_", dir=CACHE))
    print(f"{args.symbols} symbols x {args.years:g} years of CSVs in {data}; {os.cpu_count()} cores; {load()}")
    print("warm-up (numba cache, page cache; not timed) ...", flush=True)
    vectorbt_job_process(data, work / "vbt")
    trendflow_job(data, work / "tf", args.set)
    tf_runs: list[dict[str, Usage]] = []
    vbt_runs: list[Usage] = []
    for r in range(1, args.rounds + 1):
        before = load()
        tf_runs.append(trendflow_job(data, work / "tf", args.set))
        vbt_runs.append(vectorbt_job_process(data, work / "vbt"))
        tf = tf_runs[-1]
        stages = ", ".join(f"{n} {u.wall:.2f}/{u.cpu:.2f}/{u.rss:.0f}" for n, u in tf.items())
        print(f"round {r} ({before} -> {load()}): trendflow wall {sum(u.wall for u in tf.values()):.2f} s "
              f"[{stages} s/s/MiB], vectorbt wall {vbt_runs[-1].wall:.2f} s cpu {vbt_runs[-1].cpu:.2f} s "
              f"rss {vbt_runs[-1].rss:.0f} MiB", flush=True)

    med = statistics.median
    tf_wall = med(sum(u.wall for u in run.values()) for run in tf_runs)
    tf_cpu = med(sum(u.cpu for u in run.values()) for run in tf_runs)
    tf_rss = med(max(u.rss for u in run.values()) for run in tf_runs)
    vb_wall, vb_cpu, vb_rss = med(u.wall for u in vbt_runs), med(u.cpu for u in vbt_runs), med(u.rss for u in vbt_runs)
    print()
    print(f"| {args.symbols} x {args.years:g} y, median of {args.rounds} | trendflow (3 stage commands) | vectorbt 1.2 | ratio |")
    print("|---|---|---|---|")
    print(f"| wall | {tf_wall:.2f} s | {vb_wall:.2f} s | **{tf_wall / vb_wall:.2f}×** |")
    print(f"| CPU | {tf_cpu:.2f} s | {vb_cpu:.2f} s | **{tf_cpu / vb_cpu:.2f}×** |")
    print(f"| peak RSS (largest process) | {tf_rss:.0f} MiB | {vb_rss:.0f} MiB | {tf_rss / vb_rss:.2f}× |")
    for name, _ in STAGES:
        print(f"|   trendflow {name} | {med(run[name].wall for run in tf_runs):.2f} s wall, "
              f"{med(run[name].cpu for run in tf_runs):.2f} s CPU, {med(run[name].rss for run in tf_runs):.0f} MiB | | |")
    print(f"\n{load()} at the end; settings: {' '.join(args.set) or 'defaults'}")
    shutil.rmtree(work, ignore_errors=True)


def scaling(args: argparse.Namespace) -> None:
    """trendflow alone on growing universes: cost per million symbol-days should stay flat. The run
    with the least CPU of `--rounds` is printed."""
    sizes = [(100, 10.0), (500, 10.0), (2000, 10.0), (500, 20.0)]
    print("| symbols x years | signal wall / CPU / RSS | trade wall / CPU / RSS | report wall / CPU / RSS | total wall | total CPU | CPU s per M symbol-days | load |")
    print("|---|---|---|---|---|---|---|---|")
    for n, years in sizes:
        data = data_folder(n, years)
        work = Path(tempfile.mkdtemp(prefix="tf_scaling_", dir=CACHE))
        runs = [trendflow_job(data, work / "tf", args.set) for _ in range(args.rounds)]  # the CSVs were just written: in the page cache
        best = min(runs, key=lambda run: sum(u.cpu for u in run.values()))
        cells = n * round(years * 252) / 1e6
        cpu = sum(u.cpu for u in best.values())
        parts = " | ".join(f"{u.wall:.2f} s / {u.cpu:.2f} s / {u.rss:.0f} MiB" for u in best.values())
        print(f"| {n} x {years:g} | {parts} | {sum(u.wall for u in best.values()):.2f} s | {cpu:.2f} s | {cpu / cells:.2f} | {load()} |",
              flush=True)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (median reported)")
    parser.add_argument("--scaling", action="store_true", help="trendflow alone at 100/500/2000 x 10y and 500 x 20y")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to every trendflow command as --set (default settings otherwise)")
    parser.add_argument("--vectorbt-job", nargs=2, metavar=("DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.set = [item for kv in args.set for item in ("--set", kv)]
    if args.vectorbt_job:
        vectorbt_job(Path(args.vectorbt_job[0]), Path(args.vectorbt_job[1]))
    elif args.scaling:
        scaling(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
