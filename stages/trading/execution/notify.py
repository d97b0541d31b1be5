"""Webhook notifications (Slack/Discord-style JSON) and the append-only audit log."""
from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)
WEBHOOK_ENV = "TRENDFLOW_WEBHOOK_URL"


class Notifier:
    """Posts {"text", "content", "level"} (Slack reads text, Discord content). A failing webhook is
    retried with backoff and then logged: it never raises, so it never blocks trading."""

    def __init__(self, url: str | None = None, retries: int = 3, timeout: float = 2.0, backoff: float = 0.2):
        self.url = url if url is not None else os.environ.get(WEBHOOK_ENV)
        self.retries, self.timeout, self.backoff = retries, timeout, backoff
        if self.url:
            _check_url(self.url, "the webhook URL" if url is not None else WEBHOOK_ENV)
        self.failures = 0

    def send(self, level: str, message: str) -> bool:
        if not self.url:
            return False
        body = json.dumps({"text": f"[{level}] {message}", "content": f"[{level}] {message}", "level": level}).encode()
        for attempt in range(1, self.retries + 1):
            try:
                request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    if 200 <= response.status < 300:
                        return True
            except (urllib.error.URLError, OSError, ValueError) as exc:
                log.debug("webhook attempt %d failed: %s", attempt, exc)
            time.sleep(self.backoff * attempt)
        self.failures += 1
        log.warning("webhook notification failed after %d attempts (%s): %s", self.retries, level, message)
        return False

    def info(self, message: str) -> bool:
        return self.send("INFO", message)

    def warning(self, message: str) -> bool:
        return self.send("WARNING", message)

    def critical(self, message: str) -> bool:
        return self.send("CRITICAL", message)


def _check_url(url: str, name: str) -> None:
    """An http(s) URL with a host, or a ConfigError naming where it came from (a file:// or mistyped
    URL must stop the run before any order, not fail in the middle of a batch)."""
    from urllib.parse import urlsplit

    from stages.common.errors import ConfigError

    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"{name}: {url!r} is not an http(s) URL with a host (e.g. https://hooks.slack.com/services/...)")


class AuditLog:
    """audit.jsonl: one JSON object per line, appended and flushed+fsync'd; never rewritten.

    The records are first written to the execution database in the transaction of the change they
    describe; `export` appends those the file does not have yet (by sequence number), so a run
    killed between the two loses nothing: the next export catches up."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict) -> None:
        self._write([record])

    def last_seq(self) -> int:
        """The highest exported sequence number in the file (0 when none)."""
        if not self.path.exists():
            return 0
        last = 0
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                if '"seq"' in line:
                    try:
                        last = max(last, int(json.loads(line).get("seq", 0)))
                    except (ValueError, TypeError, AttributeError):
                        continue
        return last

    def export(self, store) -> int:
        """Append the database's audit records this file does not hold yet; returns how many."""
        records = store.audit_since(self.last_seq())
        self._write(records)
        return len(records)

    def _write(self, records: list[dict]) -> None:
        if not records:
            return
        text = "".join(json.dumps(r, sort_keys=True, default=str, allow_nan=False) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
