"""The worker's probes and views from its first second: 503 with a reason, never 500.

A twin view asked right after the worker started answered HTTP 500 (Faust's router found no
partitions for the table). The test asks, as fast as it can from the moment the web port
opens, for the probes and the routed views; every answer must be 200, or 503 with a JSON
reason, until all are 200.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.streams.harness import WorkerProc, make_catalog

pytestmark = pytest.mark.integration


def _ask(port: int, path: str) -> tuple[int, Any] | None:
    """Status and JSON body, or None while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, orjson.loads(body)
        except orjson.JSONDecodeError:
            return exc.code, body.decode(errors="replace")
    except OSError:
        return None


def test_probes_and_views_answer_503_with_a_reason_until_ready(
    stack: Any, unique_name: str, tmp_path: Path
) -> None:
    cluster = "tc" + unique_name[-8:]
    catalog = make_catalog(cluster, 2, 3)
    path = tmp_path / "catalog.json"
    path.write_text(catalog.to_json())
    site = next(iter(catalog.clusters[cluster]))
    paths = ["/health/ready", f"/twin/{cluster}/", f"/twin/{cluster}/{site}/", "/health/live"]
    worker = WorkerProc(stack, unique_name, path)
    seen: Counter[tuple[str, int]] = Counter()
    worker.start()
    try:
        deadline = time.monotonic() + 120
        ready = False
        while time.monotonic() < deadline and not ready:
            assert worker.proc is not None and worker.proc.poll() is None, worker.tail()
            answers = {p: _ask(worker.port, p) for p in paths}
            for p, answer in answers.items():
                if answer is None:
                    continue
                status, body = answer
                seen[(p, status)] += 1
                assert status in (200, 503), f"{p} answered {status}: {body}"
                if status == 503:
                    assert isinstance(body, dict) and body.get("ready") is False, body
                    assert isinstance(body.get("reason"), str) and body["reason"], body
            ready = all(a is not None and a[0] == 200 for a in answers.values())
            time.sleep(0.05)
        assert ready, f"not ready in 120 s; answers seen: {dict(seen)}\n{worker.tail()}"
        assert _ask(worker.port, "/health/ready") == (200, {"ready": True})
        assert _ask(worker.port, "/health/live") == (200, {"live": True})
    finally:
        worker.stop()
