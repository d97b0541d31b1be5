"""Alerts for every pipeline run, through the execution layer's webhook channel (Slack/Discord JSON,
URL from TRENDFLOW_WEBHOOK_URL; nothing is sent when it is unset):

- a failed or crashed flow run -> one CRITICAL message: the one-line reason and the output folder;
- a completed daily run -> one INFO summary: the date, the orders (side, quantity, symbol), the
  circuit breaker and the equity after the close.

They are Prefect state hooks on `trend_pipeline`, so hand-started, served and deployed runs all
send them. A hook never raises (a dead webhook is retried, then logged by the Notifier).
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("trendflow.alerts")


def one_line(text: str, limit: int = 400) -> str:
    from stages.common.cli import plain_text

    line = plain_text(" ".join(str(text).split()))
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _folder(parameters: dict[str, Any]) -> str:
    if parameters.get("out"):
        return str(parameters["out"])
    try:
        from stages.common.config import load_config

        return str(load_config(parameters.get("config_path"), list(parameters.get("overrides") or [])).output.folder)
    except Exception:  # noqa: BLE001 -- a bad config is likely why the run failed; say what we know
        return "(config output.folder)"


def failure_message(parameters: dict[str, Any], reason: str, run_name: str | None = None) -> str:
    mode = parameters.get("mode", "backtest")
    day = f" for {parameters['as_of_date']}" if parameters.get("as_of_date") else ""
    name = f" ({run_name})" if run_name else ""
    return f"trendflow {mode} run{day} failed{name}: {one_line(reason)} -- folder {_folder(parameters)}"


def daily_message(summary: dict[str, Any]) -> str | None:
    """The INFO summary of a completed daily run, or None when there is nothing to tell (a holiday)."""
    if summary.get("skipped"):
        return None
    trading = next((s["summary"] for s in summary.get("stages", []) if s["stage"] == "trading"), None)
    day = summary.get("as_of_date") or (trading or {}).get("as_of_date")
    parts = [f"trendflow daily {day}: "]
    if trading is None:
        parts.append("no trading step in this run")
    else:
        orders = trading.get("order_list") or []
        parts.append(f"{len(orders)} order(s) for the next session: {', '.join(orders)}" if orders
                     else f"no orders ({trading.get('no_orders_reason', 'none decided')})")
        parts.append(f"; breaker {'ON' if trading.get('breaker_on') else 'off'}; equity {trading.get('equity', 0.0):,.2f}")
    execute = next((s["summary"] for s in summary.get("stages", []) if s["stage"] == "execute"), None)
    if execute is not None:
        parts.append(f"; executed on {execute['broker']}: filled {execute['filled']}, rejected {execute['rejected']}")
    parts.append(f" -- folder {summary.get('out')}")
    return "".join(parts)


def _failure_reason(state) -> str:
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as error:  # noqa: BLE001 -- the result may be unreadable (a crash)
        exc = error
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
    return state.message or state.type.value


def alert_on_failure(flow, flow_run, state) -> None:
    """on_failure / on_crashed hook: one CRITICAL message."""
    from stages.trading.execution.notify import Notifier

    try:
        Notifier().critical(failure_message(dict(flow_run.parameters or {}), _failure_reason(state), flow_run.name))
    except Exception:  # noqa: BLE001 -- an alert must never turn a run's outcome into something else
        log.warning("could not send the failure alert", exc_info=True)


def alert_on_completion(flow, flow_run, state) -> None:
    """on_completion hook: an INFO summary after a daily run."""
    if (flow_run.parameters or {}).get("mode") != "daily":
        return
    from stages.trading.execution.notify import Notifier

    try:
        message = daily_message(state.result(raise_on_failure=False))
        if message:
            Notifier().info(message)
    except Exception:  # noqa: BLE001
        log.warning("could not send the daily summary alert", exc_info=True)
