"""Load benchmark of the service: a real uvicorn on loopback, bounded in requests and time.

    .venv/bin/python bench/load.py [--requests 3000] [--clients 8] [--database-url URL]

Prints, for the same server in one run: GET /healthz (the HTTP stack and a store ping: the baseline) and
POST /v1/assessments (validation, both evaluators, the audit record committed before the answer),
their p50/p99 latency and throughput, and the ratio between them. Not a test: it asserts nothing.
Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.api.server import Server  # noqa: E402


def run(url: str, method: str, path: str, bodies: list[Any], total: int, clients: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    counter = iter(range(total))
    deadline = time.monotonic() + seconds

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            for i in counter:
                if time.monotonic() > deadline:
                    return
                t0 = time.perf_counter()
                response = client.request(method, path, json=bodies[i % len(bodies)] if bodies else None)
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "per_s": len(latencies) / wall,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "statuses": statuses,  # type: ignore[dict-item]
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="requests per endpoint (bounded)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--seconds", type=float, default=60.0, help="time limit per endpoint")
    parser.add_argument("--database-url", default=None, help="audit store (default: a fresh SQLite file)")
    args = parser.parse_args()

    bodies = [
        json.loads(line)["request"]
        for line in (REPO / "tests" / "golden" / "vignettes" / "crs_icans.jsonl").read_text().splitlines()
        if line.strip()
    ]
    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite:///{tmp}/audit.sqlite3"
        server = Server({"AEGRADE_DATABASE_URL": database_url}).start()
        try:
            run(server.url, "GET", "/healthz", [], 200, args.clients, 10)  # warm-up
            run(server.url, "POST", "/v1/assessments", bodies, 200, args.clients, 10)
            baseline = run(server.url, "GET", "/healthz", [], args.requests, args.clients, args.seconds)
            graded = run(server.url, "POST", "/v1/assessments", bodies, args.requests, args.clients, args.seconds)
        finally:
            server.stop()
    print(f"aegrade load benchmark: uvicorn (1 worker) on 127.0.0.1, {args.clients} client threads, store {database_url.split(':')[0]}")
    print(f"{'endpoint':26s} {'requests':>8s} {'per s':>8s} {'p50 ms':>8s} {'p99 ms':>8s}  statuses")
    for name, row in (("GET /healthz (baseline)", baseline), ("POST /v1/assessments", graded)):
        print(f"{name:26s} {row['requests']:8.0f} {row['per_s']:8.0f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f}  {row['statuses']}")
    print(f"ratio: assessments/s = {graded['per_s'] / baseline['per_s']:.2f} x the baseline's; "
          f"p50 {graded['p50_ms'] / baseline['p50_ms']:.2f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
