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
- the batch endpoint (``--batch-size`` flights a request) through Ray Serve and the bare app: Serve's cost
  is per HTTP request, so a client that batches pays it once per batch;
- the CPU each target's processes spend per request (/proc: the bare app's uvicorn processes; for Ray the
  router replicas, HAProxy and its manager actor), steadier on a shared machine than throughput;
- Serve's floor (``--floor-clients``, ``benchmarks/serve_floor.py``): the same FastAPI endpoint answering a
  constant, through Serve (an application deployed beside the platform's for the measurement, then
  removed) and bare. Its ratio is the most Serve can leave of a bare app here whatever the endpoint does;
  the replica's one event loop being the bottleneck, the CPU Serve adds in the replica per request
  (``added_in_replica``) bounds the router's ratio: endpoint / (endpoint + that);
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flightline.platform.processes import command_line, free_port, process_tree

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
    cpu = {group: round(statistics.median(r["cpu_ms_per_request"][group] for r in rounds), 3)
           for group in rounds[0]["cpu_ms_per_request"]}
    return {
        "clients": clients,
        "requests": sum(r["requests"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
        **{key: statistics.median(r[key] for r in rounds) for key in ("throughput_rps", "p50_ms", "p99_ms", "mean_ms")},
        "cpu_ms_per_request": {**cpu, "total": round(sum(cpu.values()), 3)},
        "rounds": rounds,
    }


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU of each process still running (Linux /proc)."""
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


Processes = Callable[[], dict[str, list[int]]]


def _serve_processes(settings: Any, head: int, app: str, deployment: str) -> Processes:
    """What a request to ``app`` costs in Ray: its ingress replicas, HAProxy and the HAProxyManager actor
    (it parses HAProxy's per-request metrics lines), or Serve's Python proxy (``serve_ingress: proxy``).
    Found below the platform's Ray head by process title, again before each round (autoscaling)."""
    from flightline.platform import serve_server

    titles = {"haproxy_manager": "ray::HAProxyManager", "python_proxy": "ray::ProxyActor"}

    def groups() -> dict[str, list[int]]:
        found: dict[str, list[int]] = {"replicas": serve_server.replica_pids(settings, deployment, app),
                                       **{group: [] for group in titles}, "haproxy": []}
        for pid in process_tree(head):
            command = command_line(pid)
            if command.split(" ")[0].endswith("/bin/haproxy"):
                found["haproxy"].append(pid)
            for group, title in titles.items():
                if command.rstrip().startswith(title):
                    found[group].append(pid)
        return found

    return groups


def _measured(load: Callable[..., dict[str, Any]], url: str, body: dict[str, Any], clients: int, seconds: float,
              processes: Processes) -> dict[str, Any]:
    """One load run, with the CPU each group of server processes spent on it per request (a process that
    starts or ends during the run is left out of it)."""
    groups = processes()
    before = {group: _cpu_seconds(pids) for group, pids in groups.items()}
    result = load(url, body, clients, seconds)
    after = {group: _cpu_seconds(pids) for group, pids in groups.items()}
    result["processes"] = {group: len(pids) for group, pids in groups.items()}
    result["cpu_ms_per_request"] = {
        group: round(sum(after[group][pid] - before[group][pid] for pid in after[group] if pid in before[group])
                     * 1000 / max(1, result["requests"]), 3)
        for group in groups
    }
    return result


def _measure(targets: dict[str, tuple[str, Processes]], load: Callable[..., dict[str, Any]], body: dict[str, Any],
             clients_list: list[int], args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """At each concurrency: every target warmed up, then ``args.rounds`` runs with the targets taking
    turns, so a slow minute of the machine hits each of them."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for clients in clients_list:
        for url, _ in targets.values():
            load(url, body, clients, args.warmup)  # warm-up; lets Serve's autoscaler act
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, (url, processes) in targets.items():
                rounds[name].append(_measured(load, url, body, clients, args.seconds, processes))
        for name in targets:
            results[name].append(_summary(clients, rounds[name]))
            print(name, {k: v for k, v in results[name][-1].items() if k != "rounds"}, flush=True)
    return results


def _start_bare(workers: int, factory: str = "benchmarks.bare_app:create_app",
                env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})},
    )
    return process, f"http://127.0.0.1:{port}/v1/predict/flight-delay"


def _wait_answering(url: str, body: dict[str, Any], ready: Callable[[], bool], what: str, timeout: float) -> None:
    """Until ``url`` answers the flight with 200; SystemExit when ``ready()`` turns false or time is up."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.post(url, json=body, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not ready():
            raise SystemExit(f"{what} did not start")
        time.sleep(1)


def _feature_read_costs(settings: Any, flight: dict[str, Any], repeats: int) -> dict[str, Any]:
    import math

    from flightline.features import definitions as F
    from flightline.features import store as feature_store
    from flightline.features.online import OnlineFeatureReader
    from flightline.platform.database import connect
    from flightline.serving.schemas import FlightIn

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


def _serve_floor(settings: Any, head: int, load: Callable[..., dict[str, Any]], body: dict[str, Any],
                response: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """``benchmarks/serve_floor.py`` (the router's HTTP surface, a constant answer) through Ray Serve,
    deployed beside the platform's application with the router's settings, and under uvicorn alone;
    the platform's own config is deployed again at the end, which removes the floor application."""
    import tempfile

    import yaml

    from benchmarks.serve_floor import RESPONSE_ENV
    from flightline.platform import serve_server

    config = yaml.safe_load(serve_server.render_config(settings).read_text())
    platform_app = config["applications"][0]
    router = next(d for d in platform_app["deployments"] if d["name"] == "FlightRouter")
    config["applications"].append({
        "name": "serve_floor", "route_prefix": "/serve-floor", "import_path": "benchmarks.serve_floor:build_app",
        "args": {"response": response}, "runtime_env": platform_app["runtime_env"],
        "deployments": [{"name": "FloorRouter", "num_replicas": 1,
                         **{key: router[key] for key in ("max_ongoing_requests", "ray_actor_options")}}],
    })
    process, bare_url = _start_bare(1, "benchmarks.serve_floor:create_app", {RESPONSE_ENV: json.dumps(response)})
    serve_url = f"{settings.serve_url}/serve-floor/v1/predict/flight-delay"
    try:
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "serve_config.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            serve_server.deploy(settings, config=path)
        _wait_answering(serve_url, body, lambda: True, "the serve_floor application", timeout=240)
        _wait_answering(bare_url, body, lambda: process.poll() is None, "the bare serve_floor app", timeout=120)
        results = _measure({"bare_fastapi_1w": (bare_url, lambda: {"server": process_tree(process.pid)}),
                            "ray_serve": (serve_url, _serve_processes(settings, head, "serve_floor", "FloorRouter"))},
                           load, body, args.floor_clients, args)
    finally:
        process.terminate()
        process.wait(30)
        serve_server.deploy(settings)
    return {
        "about": "the same FastAPI endpoint and schemas answering a constant (no features, model or log): "
                 "what Serve costs per request with nothing behind it",
        "http": results,
        "ray_vs_bare": [_ratio(s, b) for s, b in zip(results["ray_serve"], results["bare_fastapi_1w"], strict=True)],
        "serve_cpu_ms_per_request": [
            {"clients": s["clients"],
             "added": round(s["cpu_ms_per_request"]["total"] - b["cpu_ms_per_request"]["total"], 3),
             "added_in_replica": round(s["cpu_ms_per_request"]["replicas"] - b["cpu_ms_per_request"]["total"], 3)}
            for s, b in zip(results["ray_serve"], results["bare_fastapi_1w"], strict=True)],
    }


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
    parser.add_argument("--batch-clients", type=int, nargs="*", default=[8],
                        help="concurrencies of the batch-endpoint comparison (Ray vs the first bare app); none: skip")
    parser.add_argument("--batch-size", type=int, default=16, help="flights per batch request")
    parser.add_argument("--floor-clients", type=int, nargs="*", default=[8],
                        help="concurrencies of the serve-floor comparison (benchmarks/serve_floor.py); none: skip it")
    parser.add_argument("--repeats", type=int, default=300, help="feature reads per method")
    parser.add_argument("--seed", action="store_true", help="write the serving tests' features and models first")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_serving.json")
    args = parser.parse_args()

    sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "serving")]
    import httpx
    from serving_fixtures import flight, seed_features, set_alias, train_small, wait_for_versions

    from flightline.models import registry
    from flightline.platform import serve_server
    from flightline.platform.config import get_settings

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
    head = serve_server.head_pid(settings)
    assert head is not None  # serve is healthy
    bares = {f"bare_fastapi_{n}w": _start_bare(n) for n in args.bare_workers}
    bare = f"bare_fastapi_{args.bare_workers[0]}w"  # the ratios' baseline
    try:
        for name, (process, url) in bares.items():
            _wait_answering(url, body, lambda p=process: p.poll() is None, name, timeout=180)
        checked = httpx.post(serve_url, json=body, timeout=10).json()
        for _, url in bares.values():
            expected = httpx.post(url, json=body, timeout=10).json()
            assert checked["delay_probability"] == expected["delay_probability"], (checked, expected)

        targets: dict[str, tuple[str, Processes]] = {
            **{name: (url, lambda p=process: {"server": process_tree(p.pid)})
               for name, (process, url) in bares.items()},
            "ray_serve": (serve_url, _serve_processes(settings, head, serve_server.APPLICATION, "FlightRouter")),
        }
        results = _measure(targets, load, body, args.clients, args)
        batched = None
        if args.batch_clients:
            bare_url, bare_processes = targets[bare]
            batch = {bare: (f"{bare_url}/batch", bare_processes),
                     "ray_serve": (f"{serve_url}/batch", targets["ray_serve"][1])}
            batched = _measure(batch, load, {"flights": [body] * args.batch_size}, args.batch_clients, args)
    finally:
        for process, _ in bares.values():
            process.terminate()
            process.wait(30)
    floor = _serve_floor(settings, head, load, body, checked, args) if args.floor_clients else None
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
        "batch_endpoint": batched and {
            "flights_per_request": args.batch_size,
            "flights_per_s": [{"clients": s["clients"], bare: round(b["throughput_rps"] * args.batch_size),
                               "ray_serve": round(s["throughput_rps"] * args.batch_size)}
                              for s, b in zip(batched["ray_serve"], batched[bare], strict=True)],
            "http": batched,
            "ray_vs_bare": [_ratio(s, b) for s, b in zip(batched["ray_serve"], batched[bare], strict=True)],
        },
        "serve_floor": floor,
        "feature_read": _feature_read_costs(settings, body, args.repeats),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
