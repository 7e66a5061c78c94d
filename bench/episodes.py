"""Episode benchmark: append and read times as a patient's history grows, on a real uvicorn.

    .venv/bin/python bench/episodes.py [--sizes 10,100,1000] [--samples 60] [--database-url URL]

For each size N, a fresh patient gets N observations, then the benchmark times, one request at a
time from one keep-alive client on loopback:
  append   POST /v1/patients/{id}/observations with the newest observed_at (the usual case)
  read     GET  /v1/patients/{id}/episode (the whole timeline, N entries)
In the same run, as the baseline: POST /v1/assessments (the same payloads, stateless) and GET
/healthz. It prints p50/p99 for each, the growth from the smallest to the largest N, and, for the
largest N, the cost of one observation arriving first-in-time (every later one is graded again).
Target (issue 6): at 1,000 observations, append and read p50 < 20 ms.
Not a test: it asserts nothing. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.api.server import Server  # noqa: E402

PAYLOADS: list[dict[str, Any]] = [
    {
        "patient": {"age_years": 9, "weight_kg": 30},
        "vitals": {"temperature_c": 39.2, "sbp_mmhg": 78, "spo2_pct": 95},
        "crs": {"hypotension": True, "vasopressors": [], "oxygen": {"device": "none"}},
        "blinatumomab": {"dose": {"value": 15, "unit": "mcg/m2/day"}},
    },
    {
        "patient": {"age_years": 9, "weight_kg": 30},
        "vitals": {"temperature_c": 37.1},
        "crs": {"vasopressors": [], "oxygen": {"device": "nasal_cannula", "flow_l_min": 2}},
        "neuro": {"capd_score": 6, "consciousness": "awakens_spontaneously"},
    },
    {
        "patient": {"age_years": 9, "weight_kg": 30},
        "vitals": {"temperature_c": 36.9},
        "crs": {"hypotension": False, "vasopressors": [], "oxygen": {"device": "none"}},
    },
]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(samples: int, call: Callable[[int], httpx.Response]) -> list[float]:
    out = []
    for i in range(samples):
        started = time.perf_counter()
        response = call(i)
        out.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"unexpected {response.status_code}: {response.text[:300]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="aegrade-bench-episodes-"))
    url = args.database_url or f"sqlite:///{workdir / 'bench.sqlite3'}"
    server = Server({"AEGRADE_DATABASE_URL": url, "AEGRADE_LOG_LEVEL": "WARNING"}).start()
    # Observations are one minute apart and end well before now (none may be in the future).
    origin = datetime.now(timezone.utc) - timedelta(days=30)
    rows: list[tuple[str, float, float, float, float]] = []
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:

            def observe(patient: str, minute: int, i: int) -> httpx.Response:
                body = {**PAYLOADS[i % len(PAYLOADS)], "observed_at": (origin + timedelta(minutes=minute)).isoformat()}
                return client.post(f"/v1/patients/{patient}/observations", json=body)

            timed(20, lambda i: observe(f"warm-{uuid.uuid4().hex[:8]}", i, i))  # warm up
            health = timed(args.samples, lambda i: client.get("/healthz"))
            stateless = timed(args.samples, lambda i: client.post("/v1/assessments", json=PAYLOADS[i % len(PAYLOADS)]))
            for n in sizes:
                patient = f"bench-{n}-{uuid.uuid4().hex[:8]}"
                filled = time.perf_counter()
                timed(n, lambda i: observe(patient, i, i))  # noqa: B023 - used at once
                filled_s = time.perf_counter() - filled
                append = timed(args.samples, lambda i: observe(patient, n + i, i))  # noqa: B023
                read = timed(args.samples, lambda i: client.get(f"/v1/patients/{patient}/episode"))  # noqa: B023
                rows.append((f"{n}", percentile(append, 0.5), percentile(append, 0.99), percentile(read, 0.5), percentile(read, 0.99)))
                print(f"  filled {n} observations in {filled_s:.1f} s", flush=True)
            first_in_time = timed(3, lambda i: observe(patient, -1 - i, i))  # every later one regraded
    finally:
        server.stop()

    print(f"\ndatabase: {url.split('://')[0]}; {args.samples} samples per figure; one client, one request at a time")
    print(f"baseline  GET /healthz           p50 {percentile(health, 0.5):7.2f} ms   p99 {percentile(health, 0.99):7.2f} ms")
    print(f"baseline  POST /v1/assessments   p50 {percentile(stateless, 0.5):7.2f} ms   p99 {percentile(stateless, 0.99):7.2f} ms")
    print(f"{'observations':>12} | {'append p50':>10} {'p99':>8} | {'read p50':>9} {'p99':>8} | append/stateless")
    for n, a50, a99, r50, r99 in rows:
        print(f"{n:>12} | {a50:8.2f}ms {a99:6.2f}ms | {r50:7.2f}ms {r99:6.2f}ms | {a50 / percentile(stateless, 0.5):.2f}x")
    small, large = rows[0], rows[-1]
    print(f"growth {small[0]} -> {large[0]} observations: append p50 x{large[1] / small[1]:.2f}, read p50 x{large[3] / small[3]:.2f}")
    print(f"one observation arriving first-in-time at {large[0]}: {statistics.median(first_in_time):.1f} ms (median of 3; all later ones regraded)")
    verdict = "MET" if large[1] < 20 and large[3] < 20 else "NOT MET"
    print(f"target at {large[0]}: append p50 {large[1]:.2f} ms, read p50 {large[3]:.2f} ms (both < 20 ms): {verdict}")


if __name__ == "__main__":
    main()
