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


class AuditLog:
    """One JSON object per line, appended and flushed+fsync'd per record; never rewritten."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict) -> None:
        line = json.dumps(record, sort_keys=True, default=str, allow_nan=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
