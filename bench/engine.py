"""Benchmark of the grading engine. Not a test: it prints figures and ratios measured in this run.

    .venv/bin/python bench/engine.py              # full run (includes 200,000 assessments for memory)
    .venv/bin/python bench/engine.py --quick      # smaller counts, for a look

It measures, on one core (one thread), over the same mix of assessments:
  assess()         the full path: validation, derived facts, durable_rules and the reference
                   evaluator compared, explanation and result models, CRS and ICANS
  durable path     durable_rules alone, on facts derived beforehand (CRS and ICANS rule sets)
  reference path   the plain-Python reference evaluator alone, on the same facts
  if/else floor    a hand-written if/else CRS+ICANS function (../shared/spec/crs-icans-research.md §8)
and prints p50/p99 latency, throughput, the ratios between them, and the growth of resident
memory over many assessments. Targets (issue 2): assess() p50 <= 150 us, >= 5,000 assessments/s,
memory flat within 5 MB over 200,000 assessments.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aegrade  # noqa: E402
from aegrade.derive import crs_facts, icans_facts  # noqa: E402
from aegrade.validation import parse_assessment  # noqa: E402


def workload() -> list[dict[str, Any]]:
    """The 16 shared CRS/ICANS vignettes: adults and children, every domain, CRS and ICANS together."""
    path = REPO / "tests" / "golden" / "vignettes" / "crs_icans.jsonl"
    return [json.loads(line)["request"] for line in path.read_text().splitlines() if line.strip()]


def if_else_floor(request: dict[str, Any]) -> tuple[int, int]:
    """The §8 reference algorithm written by hand for these inputs: the cheapest possible grading."""
    crs, vitals, neuro = request["crs"], request["vitals"], request["neuro"]
    fever = vitals.get("temperature_c", 0.0) >= 38.0
    crs_grade = 0
    if fever or crs.get("fever_masked"):
        pressors = crs.get("vasopressors") or []
        non_vp = sum(1 for p in pressors if p != "vasopressin")
        hyp = 4 if non_vp >= 2 else 3 if pressors else 2 if crs.get("hypotension") else 0
        o2 = crs.get("oxygen") or {"device": "none"}
        device, flow = o2["device"], o2.get("flow_l_min", 0.0)
        if device in ("cpap", "bipap", "mechanical_ventilation"):
            oxy = 4
        elif device in ("simple_facemask", "nonrebreather", "venturi"):
            oxy = 3
        elif device in ("nasal_cannula", "high_flow_nasal_cannula"):
            oxy = 3 if flow > 6.0 else 2
        elif device == "blow_by":
            oxy = 2
        else:
            oxy = 0
        crs_grade = max(1, hyp, oxy)
    grades = [0]
    if "ice_score" in neuro:
        s = neuro["ice_score"]
        grades.append(4 if neuro.get("unable_to_perform") else 0 if s == 10 else 1 if s >= 7 else 2 if s >= 3 else 3)
    if "capd_score" in neuro:
        s = neuro["capd_score"]
        grades.append(3 if s >= 9 else 1 if s >= 1 else 0)
    grades.append({"awakens_spontaneously": 1, "awakens_to_voice": 2, "awakens_to_tactile": 3, "unarousable": 4}.get(neuro.get("consciousness", ""), 0))
    grades.append({"resolved_rapidly": 3, "nonconvulsive_resolved_with_intervention": 3, "prolonged_over_5_min": 4, "repetitive_without_return_to_baseline": 4}.get(neuro.get("seizure", ""), 0))
    grades.append(4 if neuro.get("motor") == "deep_focal_weakness" else 0)
    grades.append({"focal": 3, "diffuse": 4}.get(neuro.get("cerebral_edema", ""), 0))
    grades.append(4 if neuro.get("icp_signs") else 0)
    return crs_grade, max(grades)


def measure(name: str, fn: Callable[[int], object], count: int, size: int) -> dict[str, float]:
    """Per-call latencies (ns) of fn(i) over `count` calls, after a warm-up."""
    for i in range(min(count // 10, 5000)):
        fn(i % size)
    gc.collect()
    gc.disable()
    try:
        samples = []
        clock = time.perf_counter_ns
        start = clock()
        for i in range(count):
            t0 = clock()
            fn(i % size)
            samples.append(clock() - t0)
        wall = clock() - start
    finally:
        gc.enable()
    samples.sort()
    return {
        "name": name,  # type: ignore[dict-item]
        "p50_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000,
        "mean_us": statistics.fmean(samples) / 1000,
        "per_s": count / (wall / 1e9),
    }


def rss_kib() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--count", type=int, default=None, help="timed calls per path (default 50,000; quick 5,000)")
    parser.add_argument("--memory-count", type=int, default=None, help="assessments for the memory check (default 200,000)")
    args = parser.parse_args()
    count = args.count or (5_000 if args.quick else 50_000)
    memory_count = args.memory_count or (20_000 if args.quick else 200_000)

    engine = aegrade.default_engine()
    requests = workload()
    size = len(requests)
    parsed = [parse_assessment(r) for r in requests]
    crs, icans = engine._runners["crs"], engine._runners["icans"]  # noqa: SLF001 - benchmark reaches inside on purpose
    crs_in = [crs_facts(a, crs.ruleset, crs.settings).facts for a in parsed]
    icans_in = [icans_facts(a, icans.ruleset, icans.settings).facts for a in parsed]

    # The paths must agree before they are timed.
    for i, request in enumerate(requests):
        result = engine.assess(request)
        assert result.crs and result.icans
        assert (result.crs.grade, result.icans.grade) == if_else_floor(request), (i, request)

    def full(i: int) -> object:
        return engine.assess(requests[i])

    def durable_only(i: int) -> object:
        return crs.durable.fired(crs_in[i], crs.settings), icans.durable.fired(icans_in[i], icans.settings)

    def reference_only(i: int) -> object:
        return crs.reference.fired(crs_in[i], crs.settings), icans.reference.fired(icans_in[i], icans.settings)

    def floor(i: int) -> object:
        return if_else_floor(requests[i])

    print(f"aegrade engine benchmark  python {platform.python_version()}  {platform.machine()}  pid {os.getpid()}")
    print(f"workload: {size} shared vignettes (CRS + ICANS each), cycled; {count:,} timed calls per path; one thread")
    print(f"glibc malloc thresholds tuned by aegrade._durable: {aegrade._durable.MALLOC_TUNED}")  # noqa: SLF001
    print()
    rows = [
        measure("assess() full", full, count, size),
        measure("durable_rules path", durable_only, count, size),
        measure("reference path", reference_only, count, size),
        measure("if/else floor", floor, count, size),
    ]
    print(f"{'path':22s} {'p50 us':>9s} {'p99 us':>9s} {'mean us':>9s} {'per second':>12s}")
    for row in rows:
        print(f"{row['name']:22s} {row['p50_us']:9.2f} {row['p99_us']:9.2f} {row['mean_us']:9.2f} {row['per_s']:12,.0f}")
    full_row, durable_row, reference_row, floor_row = rows
    print()
    print("ratios (p50):")
    print(f"  assess() / if-else floor       {full_row['p50_us'] / floor_row['p50_us']:8.1f} x")
    print(f"  assess() / durable_rules path  {full_row['p50_us'] / durable_row['p50_us']:8.1f} x")
    print(f"  durable_rules / reference      {durable_row['p50_us'] / reference_row['p50_us']:8.1f} x")
    print(f"  reference / if-else floor      {reference_row['p50_us'] / floor_row['p50_us']:8.1f} x")

    print()
    print(f"memory: resident set over {memory_count:,} assessments")
    for i in range(5_000):
        engine.assess(requests[i % size])
    gc.collect()
    before = rss_kib()
    checkpoints = []
    step = max(1, memory_count // 4)
    for i in range(memory_count):
        engine.assess(requests[i % size])
        if (i + 1) % step == 0:
            gc.collect()
            checkpoints.append(rss_kib())
    growth = checkpoints[-1] - before
    print(f"  before {before:,} KiB; after each quarter {', '.join(f'{c:,}' for c in checkpoints)} KiB")
    print(f"  growth {growth:,} KiB ({growth / 1024:.2f} MB)")

    print()
    print("targets (issue 2), as measured in this run:")
    verdict = lambda ok: "met" if ok else "NOT MET"  # noqa: E731
    print(f"  assess() p50 <= 150 us:            {full_row['p50_us']:.1f} us  {verdict(full_row['p50_us'] <= 150)}")
    print(f"  assess() >= 5,000 per second:      {full_row['per_s']:,.0f}/s  {verdict(full_row['per_s'] >= 5000)}")
    print(f"  memory flat within 5 MB:           {growth / 1024:.2f} MB  {verdict(abs(growth) <= 5 * 1024)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
