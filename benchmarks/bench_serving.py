"""Online serving: Ray Serve router vs a bare FastAPI app, and what the Feast read costs.

Needs a running platform with serve (``flightline up``), a ``champion`` alias and online features for the
benchmarked flight. ``--seed`` first writes the serving tests' synthetic feature rows and models (the
same helpers as tests/serving), so the benchmark runs on a fresh platform.

    python benchmarks/bench_serving.py --seed      # writes benchmarks/results/bench_serving.json

Measured in one run; at each concurrency every target is warmed up, then measured ``--rounds`` times
with the targets taking turns, so a slow minute of this shared machine hits all of them alike:
- latency p50/p99 and throughput (each the median of the rounds) at 1, 8 and 32 concurrent clients
  (closed loop, HTTP keep-alive, one connection each; the load from aiohttp, or wrk with
  ``--load-generator wrk``, on the same cores as the servers)
  through Ray Serve (its ingress on ``serve_port``) and the bare app (``benchmarks/bare_app.py``: the same
  RouterRuntime without Ray) with 1 and 2 uvicorn workers, since the router autoscales to 2 replicas;
- Feast's ``get_online_features`` for the flight's entities vs the one-query OnlineFeatureReader read of
  the same rows (values checked equal).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as host
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flightline.processes import free_port

ROOT = Path(__file__).resolve().parents[1]


def _quantiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": round(pick(0.50), 3), "p99_ms": round(pick(0.99), 3),
            "mean_ms": round(statistics.fmean(ordered), 3)}


async def _load_aiohttp(url: str, body: dict[str, Any], clients: int, seconds: float) -> dict[str, Any]:
    """Closed loop: each client posts, waits for the answer, posts again (aiohttp: less client CPU than httpx)."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    payload = json.dumps(body).encode()

    async def client() -> None:
        nonlocal errors
        async with aiohttp.ClientSession(headers={"content-type": "application/json"}) as http:
            while time.perf_counter() < stop_at:
                began = time.perf_counter()
                async with http.post(url, data=payload) as response:
                    await response.read()
                latencies.append((time.perf_counter() - began) * 1000)
                errors += response.status != 200

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return {"requests": len(latencies), "errors": errors,
            "throughput_rps": round(len(latencies) / (time.perf_counter() - began), 1), **_quantiles(latencies)}


# wrk's Lua hooks: POST the body; at the end print one parsable line (times in microseconds)
_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%s]==]
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK_RESULT %%d %%d %%d %%.1f %%.1f %%.1f\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout + e.status, latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def _load_wrk(url: str, body: dict[str, Any], clients: int, seconds: float) -> dict[str, Any]:
    """The same closed loop from wrk (C, epoll, one thread): ~60 us of CPU per request against aiohttp's
    ~400 us (both against a trivial server), so less of the 2 cores goes to the load generator."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(_WRK_SCRIPT % json.dumps(body))
        script.flush()
        out = subprocess.run(
            ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", script.name, url],
            capture_output=True, text=True, check=True,
        ).stdout
    line = next(line for line in out.splitlines() if line.startswith("WRK_RESULT "))
    requests, duration_us, errors, p50_us, p99_us, mean_us = (float(x) for x in line.split()[1:])
    return {"requests": int(requests), "errors": int(errors), "throughput_rps": round(requests / duration_us * 1e6, 1),
            "p50_ms": round(p50_us / 1000, 3), "p99_ms": round(p99_us / 1000, 3), "mean_ms": round(mean_us / 1000, 3)}


def _summary(clients: int, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One target at one concurrency: the median round's figures, and each round's (the spread says how
    much the machine moved)."""
    return {
        "clients": clients,
        "requests": sum(r["requests"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
        **{key: statistics.median(r[key] for r in rounds) for key in ("throughput_rps", "p50_ms", "p99_ms", "mean_ms")},
        "rounds": rounds,
    }


def _router_replicas(settings: Any) -> int | None:
    """Running router replicas, from Serve's status (autoscaling moves it between 1 and 2); None when
    ``serve status`` does not answer."""
    from flightline import serve_server

    deployment = serve_server.application_status(settings).get("deployments", {}).get("FlightRouter")
    return None if deployment is None else int(deployment["replica_states"].get("RUNNING", 0))


def _start_bare(workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.bare_app:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
    )
    return process, f"http://127.0.0.1:{port}/v1/predict/flight-delay"


def _feature_read_costs(settings: Any, flight: dict[str, Any], repeats: int) -> dict[str, Any]:
    import math

    from flightline import feature_store
    from flightline import features as F
    from flightline.database import connect
    from flightline.online_features import OnlineFeatureReader
    from flightline.schemas_serving import FlightIn

    request = FlightIn.model_validate(flight).to_request()
    store = feature_store.get_store(settings)  # built once: only Feast's per-call read cost is timed
    refs = [f"{v}:{n}" for v, names in F.FEATURE_VIEWS.items() if v != "departure_clock" for n in names]
    row = {k: v for k, v in request.entity_row().items() if k != "scheduled_departure_at"}
    reader = OnlineFeatureReader.from_settings(settings)

    def timed(fn: Any) -> tuple[list[float], Any]:
        out, samples = fn(), []
        for _ in range(repeats):
            began = time.perf_counter()
            out = fn()
            samples.append((time.perf_counter() - began) * 1000)
        return samples, out

    feast_ms, feast_out = timed(lambda: store.get_online_features(features=refs, entity_rows=[row]).to_dict())
    with connect(settings, settings.feast_db, autocommit=True) as conn:
        sql_ms, served = timed(lambda: reader.read(conn, [request])[0])
        _, distinct = reader.params([request])
        raw_ms, _ = timed(lambda: conn.execute(reader.query, distinct).fetchall())
    same = all(
        (feast_out[n][0] is None and math.isnan(served.values[n])) or feast_out[n][0] == served.values[n]
        for v, names in F.FEATURE_VIEWS.items() if v != "departure_clock" for n in names
    )
    return {
        "feast_get_online_features": _quantiles(feast_ms),
        "online_reader_total": {**_quantiles(sql_ms), "note": "one UNION ALL query + decode + request transforms "
                                "(memoized per departure, and this is one flight: a cache hit)"},
        "online_reader_sql_only": _quantiles(raw_ms),
        "same_values_as_feast": same,
        "fetched_features": len(served.fetched),
        "repeats": repeats,
    }


def _ratio(serve: dict[str, Any], bare: dict[str, Any]) -> dict[str, Any]:
    """Throughput ratio per round (the two were measured minutes apart at most) and its median."""
    per_round = [round(s["throughput_rps"] / b["throughput_rps"], 3)
                 for s, b in zip(serve["rounds"], bare["rounds"], strict=True)]
    return {"clients": serve["clients"], "throughput_ratio": statistics.median(per_round),
            "throughput_ratio_rounds": per_round, "p99_ratio": round(serve["p99_ms"] / bare["p99_ms"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per target, concurrency and round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measurements per target and concurrency, the targets taking turns")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--load-generator", choices=["aiohttp", "wrk"], default="aiohttp",
                        help="aiohttp (in Python, ships with the project) or wrk (`apt-get install wrk`)")
    parser.add_argument("--warmup", type=float, default=15.0,
                        help="seconds of load on each target before the rounds at a concurrency (the router's "
                        "upscale delay is 5 s; a new replica takes ~25 s more to load its models)")
    parser.add_argument("--bare-workers", type=int, nargs="+", default=[1, 2],
                        help="uvicorn worker counts of the bare app; ratios use the first for the target "
                        "(the router autoscales to 2 replicas)")
    parser.add_argument("--repeats", type=int, default=300, help="feature reads per method")
    parser.add_argument("--seed", action="store_true", help="write the serving tests' features and models first")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_serving.json")
    args = parser.parse_args()

    sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "serving")]
    import httpx
    from serving_fixtures import flight, seed_features, set_alias, train_small, wait_for_versions

    from flightline import registry, serve_server
    from flightline.config import get_settings

    if args.load_generator == "wrk" and shutil.which("wrk") is None:
        raise SystemExit("--load-generator wrk: no wrk on PATH (apt-get install wrk)")
    load = _load_wrk if args.load_generator == "wrk" else lambda *a: asyncio.run(_load_aiohttp(*a))
    settings = get_settings()
    if args.seed:
        seed_features(settings)
        set_alias(settings, "champion", train_small(settings, seed=1))
    champion = registry.alias_version(settings, "champion")
    if champion is None or not serve_server.is_healthy(settings):
        raise SystemExit("needs `flightline up` with serve healthy and a champion (or pass --seed)")
    wait_for_versions(settings.serve_url, {"champion": str(champion.version)})
    body = flight()

    serve_url = f"{settings.serve_url}/v1/predict/flight-delay"
    bares = {f"bare_fastapi_{n}w": _start_bare(n) for n in args.bare_workers}
    try:
        deadline = time.monotonic() + 180
        for name, (process, url) in bares.items():
            while True:
                try:
                    if httpx.post(url, json=body, timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"{name} did not start")
                time.sleep(1)
        checked = httpx.post(serve_url, json=body, timeout=10).json()
        for _, url in bares.values():
            expected = httpx.post(url, json=body, timeout=10).json()
            assert checked["delay_probability"] == expected["delay_probability"], (checked, expected)

        targets = {**{name: url for name, (_, url) in bares.items()}, "ray_serve": serve_url}
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        for clients in args.clients:
            for url in targets.values():
                load(url, body, clients, args.warmup)  # warm-up; lets Serve's autoscaler act
            rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
            for _ in range(args.rounds):  # targets take turns, so a slow minute hits each of them
                for name, url in targets.items():
                    rounds[name].append(load(url, body, clients, args.seconds))
            for name in targets:
                measured = _summary(clients, rounds[name])
                if name == "ray_serve":
                    measured["router_replicas"] = _router_replicas(settings)
                results[name].append(measured)
                print(name, {k: v for k, v in measured.items() if k != "rounds"}, flush=True)
    finally:
        for process, _ in bares.values():
            process.terminate()
            process.wait(30)

    bare = f"bare_fastapi_{args.bare_workers[0]}w"
    ratios = {name: [_ratio(s, b) for s, b in zip(results["ray_serve"], results[name], strict=True)]
              for name in results if name != "ray_serve"}
    at8 = next((r for r in results["ray_serve"] if r["clients"] == 8), None)
    ratio8 = next((r for r in ratios[bare] if r["clients"] == 8), None)
    report = {
        "benchmark": "serving",
        "host": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2), "python": host.python_version()},
        "settings": {"ingress": settings.serve_ingress, "throughput_optimized": settings.serve_throughput_optimized,
                     "colocate_models": settings.serve_colocate_models, "max_batch": settings.serve_max_batch,
                     "seconds": args.seconds, "rounds": args.rounds, "warmup_seconds": args.warmup,
                     "load_generator": args.load_generator},
        "model_version": str(champion.version),
        "http": results,
        "ray_vs_bare": ratios,
        "targets": {
            "p99_le_10ms_at_8": at8 is not None and at8["p99_ms"] <= 10,
            f"throughput_ge_0.8x_{bare}_at_8": ratio8 is not None and ratio8["throughput_ratio"] >= 0.8,
        },
        "feature_read": _feature_read_costs(settings, body, args.repeats),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
