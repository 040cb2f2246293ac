"""Prometheus metrics (METRICS_ADDRESS), scraped by a real Prometheus
(Debian's, tests.observability) and read back with PromQL: every count is
the number of calls, lines and streams the test made, so a metric that is
not recorded, recorded twice or labelled wrong fails."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from buildplatform.v1 import build_log_pb2 as L
from buildplatform.v1 import build_pb2, user_pb2
from google.protobuf import json_format

from server import migrate
from tests.e2e.streaming import lines, new_build, start_running
from tests.observability import Prometheus, prometheus
from tests.support import (
    ServerProcess,
    create_database,
    drop_database,
    eventually,
    open_channel,
    running_server,
    stubs,
)

GET_BUILD = "buildplatform.v1.BuildService/GetBuild"
STREAM_LOGS = "buildplatform.v1.BuildLogService/StreamBuildLogs"
GET_USER = "buildplatform.v1.UserService/GetUser"
MISSING = "c" + "0" * 24


def scrape(proc: ServerProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=10) as response:
        assert response.status == 200
        body: str = response.read().decode()
    return body


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the text format, None when absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, rest = series.partition("{")
        if metric != name:
            continue
        found = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if part) if rest else {}
        if all(found.get(key) == f'"{wanted}"' for key, wanted in labels.items()):
            return float(value)
    return None


def settled(prom: Prometheus, promql: str, expected: float) -> None:
    """Prometheus answers `expected` for `promql` once it has scraped (every second)."""
    seen: list[float | None] = []

    def right() -> bool:
        seen.append(prom.value(promql))
        return seen[-1] == expected

    try:
        eventually(right, promql)
    except AssertionError:
        raise AssertionError(f"{promql}: expected {expected}, Prometheus said {seen[-3:]}") from None


@pytest.fixture(scope="module")
def own_database(postgres: str) -> Iterator[str]:
    """A database of this module's own: no other server listens on it."""
    url = create_database(postgres, "bp_metrics")
    migrate.upgrade(url)
    yield url
    drop_database(postgres, url)


@pytest.fixture(scope="module")
def metered(own_database: str) -> Iterator[ServerProcess]:
    """A server of this module's own (its counts are the module's calls only),
    at most one stream at a time, pools of 3 + 2."""
    with running_server(own_database, MAX_STREAMS="1", DB_POOL_SIZE="3", DB_POOL_MAX_OVERFLOW="2") as proc:
        assert proc.metrics_port
        yield proc


@pytest.fixture(scope="module")
def scraper(metered: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    with prometheus([f"127.0.0.1:{metered.metrics_port}"], tmp_path_factory.mktemp("prometheus")) as prom:
        yield prom


def test_calls_over_both_transports_are_counted_by_method_status_and_transport(metered, scraper):
    with metered.channel() as channel:
        api = stubs(channel)
        build = new_build(api)
        request = build_pb2.GetBuildRequest(id=build.id)
        replies = [api.builds.GetBuild(request)]
        # Seen once before the others, so that rate() has a start to rise from.
        settled(scraper, f'sum(grpc_server_call_started_total{{grpc_method="{GET_BUILD}"}})', 1)
        replies += [api.builds.GetBuild(request) for _ in range(4)]
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as missing:
                api.builds.GetBuild(build_pb2.GetBuildRequest(id=MISSING))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    http_bodies = []
    for _ in range(4):
        status, _, body = metered.http().request(
            "POST", f"/{GET_BUILD}", json_format.MessageToJson(request).encode(),
            {"content-type": "application/json", "connect-protocol-version": "1",
             "authorization": f"Bearer {metered.token}"})
        assert status == 200
        http_bodies.append(body)

    ok = f'grpc_method="{GET_BUILD}",grpc_status="OK"'
    settled(scraper, f'sum(grpc_server_call_duration_seconds_count{{{ok},transport="grpc"}})', 5)
    settled(scraper, f'sum(grpc_server_call_duration_seconds_count{{{ok},transport="http"}})', 4)
    settled(scraper, f'sum(grpc_server_call_duration_seconds_count{{grpc_method="{GET_BUILD}",'
                     'grpc_status="NOT_FOUND",transport="grpc"})', 3)
    settled(scraper, f'sum(grpc_server_call_started_total{{grpc_method="{GET_BUILD}"}})', 12)
    # The bytes each call sent: what the client received, to the byte (a
    # unary HTTP response is counted after on_end, when it is encoded).
    settled(scraper, f'sum(grpc_server_call_sent_total_compressed_message_size_bytes_sum{{{ok},transport="grpc"}})',
            sum(reply.ByteSize() for reply in replies))
    settled(scraper, f'sum(grpc_server_call_sent_total_compressed_message_size_bytes_count{{{ok},transport="http"}})',
            4)
    settled(scraper, f'sum(grpc_server_call_sent_total_compressed_message_size_bytes_sum{{{ok},transport="http"}})',
            sum(len(body) for body in http_bodies))
    settled(scraper, f'sum(grpc_server_call_rcvd_total_compressed_message_size_bytes_sum{{{ok},transport="grpc"}})',
            5 * request.ByteSize())
    # rate() needs two scrapes of a series; the dashboards' queries then answer.
    rate = f'sum(rate(grpc_server_call_started_total{{grpc_method="{GET_BUILD}"}}[1m]))'
    eventually(lambda: scraper.value(rate) is not None, rate)
    assert (scraper.value(rate) or 0) > 0
    p99 = ('histogram_quantile(0.99, sum by (le, grpc_method) '
           f'(rate(grpc_server_call_duration_seconds_bucket{{grpc_method="{GET_BUILD}"}}[1m])))')
    eventually(lambda: scraper.value(p99) is not None, p99)
    assert 0 < (scraper.value(p99) or 0) < 10


def test_appends_and_a_follower_are_counted(metered, scraper):
    with metered.channel() as channel:
        api = stubs(channel)
        build = new_build(api)
        start_running(api, build.id)
        batches = [lines(*(f"line {b}.{i}" for i in range(size))) for b, size in enumerate((2, 3, 5))]
        for batch in batches:
            api.logs.AppendBuildLogs(L.AppendBuildLogsRequest(build_id=build.id, entries=batch))
        # A retry of the last batch is recognised and appends nothing.
        retry = api.logs.AppendBuildLogs(L.AppendBuildLogsRequest(build_id=build.id, entries=batches[2],
                                                                  first_sequence=6))
        assert retry.already_written
        settled(scraper, 'buildplatform_feed_appended_entries_total{kind="log"}', 10)
        settled(scraper, 'buildplatform_feed_append_batches_total{kind="log"}', 3)
        settled(scraper, 'buildplatform_feed_appended_bytes_total{kind="log"}',
                sum(entry.ByteSize() for batch in batches for entry in batch))

        follower = api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build.id, follow=True), timeout=60)
        received = iter(follower)
        first = next(received)
        assert first.caught_up and len(first.logs) == 10
        settled(scraper, f'buildplatform_streams_open{{grpc_method="{STREAM_LOGS}",transport="grpc"}}', 1)
        # MAX_STREAMS=1: a second stream is refused, and counted by kind.
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build.id), timeout=30)))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        settled(scraper, 'buildplatform_calls_refused_total{kind="stream"}', 1)
        settled(scraper, 'buildplatform_calls_refused_total{kind="unary"}', 0)

        live = lines("live 1", "live 2")
        api.logs.AppendBuildLogs(L.AppendBuildLogsRequest(build_id=build.id, entries=live))
        got = next(message for message in received if message.logs)   # past heartbeats
        assert [log.message for log in got.logs] == ["live 1", "live 2"]
        settled(scraper, 'buildplatform_feed_delivery_lag_seconds_count{kind="log"}', 1)
        lag = scraper.value('buildplatform_feed_delivery_lag_seconds_sum{kind="log"}')
        assert lag is not None and 0 <= lag < 10
        # The followed build's ring holds the two live lines (sampled by the health loop).
        eventually(lambda: (scraper.value("buildplatform_feed_ring_bytes") or 0) > 0, "ring bytes")
        follower.cancel()
    settled(scraper, f'buildplatform_streams_open{{grpc_method="{STREAM_LOGS}",transport="grpc"}}', 0)
    settled(scraper, "buildplatform_feed_ring_bytes", 0)
    settled(scraper, f'sum(grpc_server_call_duration_seconds_count{{grpc_method="{STREAM_LOGS}",'
                     'grpc_status="CANCELLED"})', 1)


def test_pool_gauges_and_the_notification_queue_are_sampled(metered, scraper):
    settled(scraper, 'buildplatform_db_pool_max_connections{pool="psycopg"}', 5)
    settled(scraper, 'buildplatform_db_pool_max_connections{pool="sqlalchemy"}', 5)
    for pool in ("psycopg", "sqlalchemy"):
        held = scraper.value(f'sum(buildplatform_db_pool_connections{{pool="{pool}"}})')
        assert held is not None and 1 <= held <= 5, (pool, held)
        assert scraper.value(f'buildplatform_db_pool_waiting{{pool="{pool}"}}') == 0
    waits = scraper.value('buildplatform_db_pool_wait_seconds_count{pool="psycopg"}')
    assert waits is not None and waits > 0
    usage = scraper.value("buildplatform_db_notification_queue_usage")
    assert usage is not None and 0 <= usage < 0.5
    assert scraper.value("buildplatform_db_listen_connected") == 1


def test_a_lost_listen_connection_is_counted_as_a_reconnect(metered, scraper, own_database):
    assert sample(scrape(metered), "buildplatform_db_listen_reconnects_total") == 0
    with psycopg.connect(own_database, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'buildplatform-listen' AND datname = current_database()"
        ).fetchall()
    assert killed == [(True,)]
    settled(scraper, "buildplatform_db_listen_reconnects_total", 1)
    settled(scraper, "buildplatform_db_listen_connected", 1)


def test_the_endpoint_speaks_the_prometheus_text_format(metered):
    with urllib.request.urlopen(f"http://127.0.0.1:{metered.metrics_port}/metrics", timeout=10) as response:
        content_type = response.headers["content-type"]
        text = response.read().decode()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "# TYPE grpc_server_call_duration_seconds histogram" in text
    assert "# TYPE grpc_server_call_started_total counter" in text
    assert "# TYPE buildplatform_db_pool_connections gauge" in text
    assert "# HELP buildplatform_feed_delivery_lag_seconds" in text
    # A66's boundaries, and the single-process registry's own process metrics.
    assert sample(text, "grpc_server_call_duration_seconds_bucket", grpc_method=GET_BUILD, grpc_status="OK",
                  transport="grpc", le="0.0008") is not None
    assert sample(text, "process_resident_memory_bytes") is not None
    assert "_created" not in text


def test_without_metrics_address_no_endpoint_is_served(database_url):
    with running_server(database_url, METRICS_ADDRESS="") as proc:
        assert proc.metrics_port == 0
        assert "serving metrics" not in proc.log()
        with proc.channel() as channel:
            build = new_build(stubs(channel))
            assert stubs(channel).builds.GetBuild(build_pb2.GetBuildRequest(id=build.id)).build.id == build.id


def test_a_follower_behind_the_ring_is_counted_reading_the_database(database_url):
    """FEED_RING_BYTES=1 keeps no line in memory: every live read of a follower is a database read."""
    with running_server(database_url, FEED_RING_BYTES="1") as proc, proc.channel() as channel:
        api = stubs(channel)
        build = new_build(api)
        start_running(api, build.id)
        api.logs.AppendBuildLogs(L.AppendBuildLogsRequest(build_id=build.id, entries=lines("a", "b")))
        follower = api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build.id, follow=True), timeout=60)
        received = iter(follower)
        assert next(received).caught_up
        before = sample(scrape(proc), "buildplatform_feed_follower_database_reads_total", kind="log") or 0
        api.logs.AppendBuildLogs(L.AppendBuildLogsRequest(build_id=build.id, entries=lines("c")))
        assert [log.message for log in next(message for message in received if message.logs).logs] == ["c"]
        after = sample(scrape(proc), "buildplatform_feed_follower_database_reads_total", kind="log")
        assert after is not None and after > before
        assert sample(scrape(proc), "buildplatform_feed_follower_database_reads_total", kind="event") == 0
        follower.cancel()


def _records(proc: ServerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in list(proc.lines) if line.startswith("{")]


def _calls_on_new_connections(proc: ServerProcess, count: int) -> None:
    def call() -> None:
        with open_channel(proc.address, token=proc.token) as channel, pytest.raises(grpc.RpcError) as caught:
            stubs(channel).users.GetUser(user_pb2.GetUserRequest(id=MISSING), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    threads = [threading.Thread(target=call) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_one_scrape_of_the_supervisor_sees_every_worker(database_url, tmp_path: Path):
    with running_server(database_url, WORKERS="2", DB_POOL_SIZE="2", DB_POOL_MAX_OVERFLOW="1") as proc:
        assert proc.metrics_port
        eventually(lambda: {r.get("worker") for r in _records(proc) if r.get("msg", "").startswith("listening on")}
                   >= {1, 2}, "both workers listening")
        directory = next(r["multiprocess_dir"] for r in _records(proc) if "multiprocess_dir" in r)
        with prometheus([f"127.0.0.1:{proc.metrics_port}"], tmp_path) as scraper:
            _calls_on_new_connections(proc, 30)
            served = {r["worker"] for r in _records(proc)
                      if r.get("logger") == "server.access" and r.get("method", "").endswith("/GetUser")}
            assert served == {1, 2}, "the kernel gave both workers calls"
            not_found = f'sum(grpc_server_call_duration_seconds_count{{grpc_method="{GET_USER}",grpc_status="NOT_FOUND"}})'
            settled(scraper, not_found, 30)
            # Gauges sum over live workers: two pools of 2 + 1.
            settled(scraper, 'buildplatform_db_pool_max_connections{pool="psycopg"}', 6)
            settled(scraper, "buildplatform_db_listen_connected", 2)

            victim = next(r["pid"] for r in reversed(_records(proc)) if r.get("worker") == 2 and "pid" in r
                          and "started" in r.get("msg", ""))
            os.kill(victim, signal.SIGKILL)
            eventually(lambda: any(r.get("pid") not in (None, victim) and r.get("worker") == 2
                                   and "started" in r.get("msg", "") for r in _records(proc)), "worker 2 restarted")
            eventually(lambda: sum(1 for r in _records(proc) if r.get("worker") == 2
                                   and r.get("msg", "").startswith("listening on") and "HTTP" not in r["msg"]) >= 2,
                       "worker 2 listening again")
            # The dead worker's calls still count; its gauges no longer do.
            _calls_on_new_connections(proc, 4)
            settled(scraper, not_found, 34)
            settled(scraper, 'buildplatform_db_pool_max_connections{pool="psycopg"}', 6)
        assert os.path.isdir(directory)
    assert not os.path.exists(directory), "the supervisor removes its metrics directory when it stops"


OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_the_docs_table_names_every_metric_served(metered):
    documented = set(re.findall(r"^\| `((?:grpc|buildplatform)_[a-z_]+)` \|", OPERATIONS.read_text(), re.M))
    served = set(re.findall(r"^# TYPE ((?:grpc|buildplatform)_[a-z_]+) \w+", scrape(metered), re.M))
    assert documented == served


def test_the_docs_queries_run(metered, scraper):
    block = OPERATIONS.read_text().split("```promql\n", 1)[1].split("```", 1)[0]
    queries = [" ".join(part.split("\n", 1)[1].split()) for part in block.strip().split("\n\n")]
    assert len(queries) == 8
    for query in queries:
        scraper.query(query)   # a query Prometheus cannot parse is an HTTP 400 here
    with metered.channel() as channel:   # GetBuild calls seen by two scrapes at least: a rate
        api = stubs(channel)
        build = new_build(api)
        started = f'sum(grpc_server_call_started_total{{grpc_method="{GET_BUILD}"}})'
        for _ in range(2):
            seen = scraper.value(started) or 0
            api.builds.GetBuild(build_pb2.GetBuildRequest(id=build.id))
            eventually(lambda seen=seen: (scraper.value(started) or 0) > seen, "a scrape")
    p99 = queries[0]
    eventually(lambda: any(r["metric"].get("grpc_method") == GET_BUILD for r in scraper.query(p99)),
               "the p99 of GetBuild")
    assert not any(r["metric"].get("grpc_method", "").startswith("grpc.") for r in scraper.query(p99))
