"""When metrics and traces are on, from the environment alone (no server)."""

from __future__ import annotations

import pytest

from server.config import Settings
from server.telemetry import tracing_problem, tracing_wanted


def test_metrics_are_served_on_loopback_by_default_and_empty_turns_them_off():
    assert Settings.from_env({}).metrics_address == "127.0.0.1:9464"
    assert Settings.from_env({"METRICS_ADDRESS": ""}).metrics_address == ""


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"METRICS_ADDRESS": "9464"}, "METRICS_ADDRESS='9464' must be host:port, for example 127.0.0.1:9464"),
        ({"METRICS_ADDRESS": "0.0.0.0:9464"}, "METRICS_ADDRESS='0.0.0.0:9464' would serve plaintext beyond this machine"),
        ({"METRICS_ADDRESS": "127.0.0.1:50051"}, "GRPC_ADDRESS and METRICS_ADDRESS are both '127.0.0.1:50051'"),
        ({"METRICS_ADDRESS": "127.0.0.1:8080"}, "HTTP_ADDRESS and METRICS_ADDRESS are both '127.0.0.1:8080'"),
    ],
)
def test_a_metrics_address_is_checked_like_the_other_ports(env, said):
    with pytest.raises(SystemExit) as refused:
        Settings.from_env(env)
    assert said in str(refused.value)


def test_plaintext_metrics_beyond_loopback_need_allow_plaintext():
    allowed = Settings.from_env({"METRICS_ADDRESS": "0.0.0.0:9464", "ALLOW_PLAINTEXT": "true"})
    assert allowed.metrics_address == "0.0.0.0:9464"


@pytest.mark.parametrize(
    ("env", "wanted"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "buildplatform"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_off_unless_the_standard_variables_ask_for_it(env, wanted):
    assert tracing_wanted(env) is wanted
    assert tracing_problem(env) is None


def test_the_signal_specific_protocol_wins_over_the_general_one():
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert tracing_problem({**base, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) is None
    said = tracing_problem({**base, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"})
    assert said is not None and "http/json" in said
    # A protocol nobody uses is no problem while tracing is off.
    assert tracing_problem({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) is None
