"""Report a training loop's FLOPs to the local gpulse agent; standard library only.

Copy this file into a training job or import it::

    from agent.signals.client import FlopsReporter
    reporter = FlopsReporter(flops_per_token=6 * n_params)   # 6·N per trained token
    for step in ...:
        ...
        reporter.add_tokens(tokens_in_step)                  # posts at most every 10 s

Totals are monotonic, so a request that fails or is skipped loses nothing: the next one
carries it. Reporting never raises into the training loop; it returns False and logs once.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:10835"
PATH = "/api/v1/workloads/report"


class FlopsReporter:
    def __init__(self, url: str | None = None, *, token: str | None = None, pid: int | None = None,
                 flops_per_token: float | None = None, min_interval_s: float = 10.0, timeout_s: float = 1.0,
                 baseline: bool = True) -> None:
        self.url = (url or os.environ.get("GPULSE_URL") or DEFAULT_URL).rstrip("/") + PATH
        self.token = token if token is not None else os.environ.get("GPULSE_REPORT_TOKEN")
        self.pid = pid if pid is not None else os.getpid()
        self.flops_per_token = flops_per_token
        self.min_interval_s = min_interval_s
        self.timeout_s = timeout_s
        self.flops_total = 0.0
        self.tokens_total = 0.0
        self._last_sent = float("-inf")
        self._warned = False
        if baseline:  # the agent counts from the first report: send 0 so the first step counts too
            self.flush()

    def add_flops(self, flops: float) -> bool:
        """Add model FLOPs done since the last call; posts when ``min_interval_s`` has passed."""
        self.flops_total += flops
        return self._maybe_send()

    def add_tokens(self, tokens: float) -> bool:
        if self.flops_per_token is None:
            raise ValueError("FlopsReporter(flops_per_token=...) is needed to report tokens")
        self.tokens_total += tokens
        return self._maybe_send()

    def flush(self) -> bool:
        """Post the totals now."""
        if self.flops_per_token is not None:
            body = {"pid": self.pid, "tokens_total": self.tokens_total,
                    "flops_per_token": self.flops_per_token}
        else:
            body = {"pid": self.pid, "model_flops_total": self.flops_total}
        self._last_sent = time.monotonic()
        return self._post(body)

    def _maybe_send(self) -> bool:
        if time.monotonic() - self._last_sent < self.min_interval_s:
            return False
        return self.flush()

    def _post(self, body: dict[str, float | int]) -> bool:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode()
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return bool(200 <= response.status < 300)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            if not self._warned:  # once: a training loop must not flood its log
                self._warned = True
                detail: object = exc
                if isinstance(exc, urllib.error.HTTPError):  # the agent's reason, e.g. "total decreased"
                    detail = exc.read().decode(errors="replace")
                log.warning("gpulse FLOPs report to %s failed: %s", self.url, detail)
            return False
