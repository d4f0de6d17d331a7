"""BatchLogger (hubml.extensions.tracking.fastlog) against a fake client: batching within
MLflow's limits, order, validation in the caller, flush, outage backlog and retries, refused
batches, close/exit. No MLflow server; the few tests that need mlflow itself say so."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from hubml.extensions.tracking import fastlog
from hubml.extensions.tracking.fastlog import BatchLogger, Metric, Param, Tag


class Refused(Exception):
    """What MLflow raises for rejected data (it carries an error_code, like MlflowException)."""

    def __init__(self, message: str, error_code: str = "INVALID_PARAMETER_VALUE"):
        super().__init__(message)
        self.error_code = error_code


class FakeClient:
    """Records log_batch calls. ``down`` makes every call fail with ConnectionError (an outage);
    ``gate`` (an Event) holds the next call until set; ``delay`` slows every call; ``refuse``
    decides per call whether to raise a non-retryable error."""

    def __init__(self, delay: float = 0.0):
        self.calls: list[tuple[list[Metric], list[Param], list[Tag]]] = []
        self.attempts = 0
        self.delay = delay
        self.down = False
        self.gate: threading.Event | None = None
        self.refuse = None
        self.lock = threading.Lock()

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        assert run_id == "run1"
        with self.lock:
            self.attempts += 1
        if self.gate is not None:
            self.gate.wait(10)
            self.gate = None
        if self.delay:
            time.sleep(self.delay)
        if self.down:
            raise ConnectionError("connection refused")
        if self.refuse is not None and self.refuse(list(metrics), list(params), list(tags)):
            raise Refused("Invalid value for parameter: no")
        self.calls.append((list(metrics), list(params), list(tags)))

    def metrics(self, key=None) -> list[Metric]:
        return [m for call in self.calls for m in call[0] if key is None or m.key == key]


@pytest.fixture
def client():
    return FakeClient()


@pytest.fixture
def make_logger():
    loggers = []

    def make(client, **kw):
        lg = BatchLogger("run1", client, **kw)
        loggers.append(lg)
        return lg

    yield make
    for lg in loggers:
        lg._begin_close(0)
    for lg in loggers:
        lg._thread.join(5)


def held(client: FakeClient, lg: BatchLogger) -> threading.Event:
    """Park the background thread inside a first request (one tag), so that what is logged next
    is all queued before the thread batches it. Set the returned event to let it go."""
    gate = client.gate = threading.Event()
    lg.set_tag("warmup", "1")
    deadline = time.monotonic() + 5
    while client.attempts == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    return gate


def assert_within_limits(calls):
    for metrics, params, tags in calls:
        assert len(metrics) <= 1000 and len(params) <= 100 and len(tags) <= 100
        assert len(metrics) + len(params) + len(tags) <= 1000


# --- batching ---------------------------------------------------------------------------------


def test_2500_metrics_go_in_three_requests_in_order(client, make_logger):
    lg = make_logger(client)
    gate = held(client, lg)
    for step in range(2500):
        lg.log_metric("loss", 1.0 / (step + 1), step=step)
    gate.set()
    lg.flush(10)
    metric_calls = [len(m) for m, _, _ in client.calls if m]
    assert metric_calls == [1000, 1000, 500]
    assert [m.step for m in client.metrics("loss")] == list(range(2500))
    assert_within_limits(client.calls)


def test_150_params_go_in_two_requests(client, make_logger):
    lg = make_logger(client)
    gate = held(client, lg)
    lg.log_params({f"p{i}": i for i in range(150)})
    gate.set()
    lg.flush(10)
    assert [len(p) for _, p, _ in client.calls if p] == [100, 50]
    assert [p.key for _, ps, _ in client.calls for p in ps] == [f"p{i}" for i in range(150)]


def test_mixed_batch_respects_the_1000_entity_total(client, make_logger):
    lg = make_logger(client)
    gate = held(client, lg)
    for step in range(950):
        lg.log_metric("acc", 0.5, step=step)
    lg.set_tags({f"t{i}": "x" for i in range(150)})
    gate.set()
    lg.flush(10)
    assert_within_limits(client.calls)
    assert len(client.metrics()) == 950
    assert sum(len(t) for _, _, t in client.calls) == 151  # with the warm-up tag
    assert lg.status()["sent"] == 1101


def test_same_tag_twice_in_a_batch_keeps_the_last_value(client, make_logger):
    lg = make_logger(client)
    gate = held(client, lg)
    lg.set_tag("phase", "warmup")
    lg.set_tag("phase", "train")
    gate.set()
    lg.flush(10)
    tags = [t for _, _, ts in client.calls for t in ts if t.key == "phase"]
    assert tags == [Tag("phase", "train")]
    assert lg.backlog == 0 and lg.status()["sent"] == 3


def test_metric_fields_and_timestamps_fixed_at_log_time(client, make_logger):
    lg = make_logger(client)
    before = int(time.time() * 1000)
    lg.log_metric("loss", 2, step=7)
    lg.log_metric("loss", 1.5, timestamp=123)
    lg.log_metrics({"a": 1, "b": 2.5}, step=3)
    lg.flush(10)
    first, second, a, b = client.metrics()
    assert (
        first.key == "loss"
        and first.value == 2.0
        and isinstance(first.value, float)
        and first.step == 7
    )
    assert before <= first.timestamp <= int(time.time() * 1000)
    assert second == Metric("loss", 1.5, 123, 0)
    assert (a.value, a.step, b.value, b.step) == (1.0, 3, 2.5, 3) and a.timestamp == b.timestamp


def test_numpy_scalars_are_accepted(client, make_logger):
    np = pytest.importorskip("numpy")
    lg = make_logger(client)
    lg.log_metric("loss", np.float32(0.25), step=np.int64(4))
    lg.log_metric("acc", np.array(0.5))
    lg.flush(10)
    assert [(m.value, m.step) for m in client.metrics()] == [(0.25, 4), (0.5, 0)]


# --- the loop never waits -------------------------------------------------------------------------


def test_logging_does_not_wait_for_a_slow_server(make_logger):
    client = FakeClient(delay=0.5)
    lg = make_logger(client)
    start = time.perf_counter()
    for step in range(10_000):
        lg.log_metric("loss", 0.1, step=step)
    enqueue = time.perf_counter() - start
    assert enqueue < 0.4, f"10,000 log calls took {enqueue:.2f}s while each request takes 0.5s"
    assert lg.backlog > 0  # the first request is still in flight
    lg.flush(30)
    assert [m.step for m in client.metrics()] == list(range(10_000))


# --- bad input: ValueError in the caller, nothing queued ---------------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (math.nan, ["'loss'", "nan", "finite"]),
        (math.inf, ["'loss'", "inf", "finite"]),
        (-math.inf, ["'loss'", "inf", "finite"]),
        ("0.5", ["'loss'", "not a number", "str", "allowed"]),
        (None, ["'loss'", "not a number", "allowed"]),
        (True, ["'loss'", "not a number", "bool"]),
        ([1.0, 2.0], ["'loss'", "not a number", "list"]),
        (1 + 2j, ["'loss'", "not a number", "complex"]),
    ],
)
def test_bad_metric_values_raise_in_the_caller(client, make_logger, value, words):
    lg = make_logger(client)
    with pytest.raises(ValueError) as err:
        lg.log_metric("loss", value, step=1)
    for word in words:
        assert word in str(err.value)
    assert lg.backlog == 0


@pytest.mark.parametrize(
    ("key", "words"),
    [
        (3, ["metric key", "str", "int"]),
        (None, ["metric key", "str", "NoneType"]),
        ("", ["metric key", "non-empty"]),
        ("loss!", ["'loss!'", "allowed are letters"]),
        ("/loss", ["'/loss'", "relative path"]),
        ("a//b", ["'a//b'", "relative path", "'a/b'"]),
        ("x" * 251, ["251 characters", "250"]),
    ],
)
def test_bad_metric_keys_raise_in_the_caller(client, make_logger, key, words):
    lg = make_logger(client)
    with pytest.raises(ValueError) as err:
        lg.log_metric(key, 1.0)
    for word in words:
        assert word in str(err.value)


def test_bad_step_and_timestamp(client, make_logger):
    lg = make_logger(client)
    with pytest.raises(ValueError, match="step must be an int"):
        lg.log_metric("loss", 1.0, step=1.5)
    with pytest.raises(ValueError, match="timestamp .* outside 0"):
        lg.log_metric("loss", 1.0, timestamp=-1)


def test_one_bad_value_in_log_metrics_queues_nothing(client, make_logger):
    lg = make_logger(client)
    with pytest.raises(ValueError, match="'b'.*finite"):
        lg.log_metrics({"a": 1.0, "b": math.nan, "c": 2.0}, step=1)
    assert lg.backlog == 0
    lg.flush(5)
    assert client.calls == []


def test_param_value_longer_than_6000_characters(client, make_logger):
    lg = make_logger(client)
    lg.log_param("ok", "x" * 6000)
    with pytest.raises(ValueError) as err:
        lg.log_param("config", "x" * 6001)
    assert (
        "'config'" in str(err.value)
        and "6001 characters" in str(err.value)
        and "6000" in str(err.value)
    )
    with pytest.raises(ValueError, match="8000"):
        lg.set_tag("note", "y" * 8001)


def test_params_are_immutable(client, make_logger):
    lg = make_logger(client)
    lg.log_params({"lr": 0.1, "batch": 64})
    lg.log_param("lr", 0.1)  # same value: accepted, not sent twice
    with pytest.raises(ValueError) as err:
        lg.log_param("lr", 0.2)
    assert (
        "'lr'" in str(err.value) and "'0.1'" in str(err.value) and "cannot change" in str(err.value)
    )
    lg.flush(5)
    assert [p for _, ps, _ in client.calls for p in ps] == [
        Param("lr", "0.1"),
        Param("batch", "64"),
    ]


# --- flush, outage, backlog ------------------------------------------------------------------------


def test_flush_waits_until_sent(make_logger):
    client = FakeClient(delay=0.2)
    lg = make_logger(client)
    for step in range(10):
        lg.log_metric("loss", 0.5, step=step)
    lg.flush(10)
    assert lg.backlog == 0 and len(client.metrics()) == 10


def test_outage_keeps_the_data_reports_the_backlog_and_recovers(client, make_logger, capsys):
    client.down = True
    lg = make_logger(client)
    for step in range(300):
        lg.log_metric("loss", 0.5, step=step)
    with pytest.raises(TimeoutError, match=r"300 item\(s\).*connection refused"):
        lg.flush(0.5)
    status = lg.status()
    assert status["pending"] == 300 and status["sent"] == 0
    assert status["retries"] >= 1 and "connection refused" in status["last_error"]
    assert status["outage_since"] is not None and status["outage_since"] <= time.time()
    assert "OUTAGE" in repr(lg) and "pending=300" in repr(lg)
    time.sleep(0.6)
    for step in range(300, 500):  # still accepted while the server is down
        lg.log_metric("loss", 0.5, step=step)
    client.down = False
    lg.flush(10)
    assert [m.step for m in client.metrics()] == list(range(500))
    status = lg.status()
    assert status["pending"] == 0 and status["sent"] == 500 and status["outage_since"] is None
    err = capsys.readouterr().err
    assert "MLflow unreachable for run run1" in err and "kept in memory" in err
    assert "reachable again" in err


def test_retries_back_off(client, make_logger):
    client.down = True
    lg = make_logger(client)
    lg.log_metric("loss", 1.0)
    time.sleep(1.6)
    # 0.2 + 0.4 + 0.8 s of backoff: about 4 attempts, not hundreds
    assert 2 <= client.attempts <= 5, client.attempts


def test_refused_batch_is_dropped_with_a_warning_and_logging_goes_on(client, make_logger, capsys):
    client.refuse = lambda metrics, params, tags: any(m.key == "bad" for m in metrics)
    lg = make_logger(client)
    gate = held(client, lg)
    lg.log_metric("bad", 1.0)
    lg.log_metric("loss", 1.0)
    gate.set()
    lg.flush(10)
    assert client.metrics() == []
    lg.log_metric("good", 2.0)
    lg.flush(10)
    assert [m.key for m in client.metrics()] == ["good"]
    status = lg.status()
    assert (
        status["dropped"] == 2
        and status["pending"] == 0
        and "Invalid value" in status["last_error"]
    )
    err = capsys.readouterr().err
    assert "refused 2 item(s)" in err and "dropped" in err and "metrics bad, loss" in err


def test_a_refused_param_does_not_take_the_metrics_with_it(client, make_logger, capsys):
    client.refuse = lambda metrics, params, tags: bool(params)
    lg = make_logger(client)
    gate = held(client, lg)
    lg.log_metric("loss", 1.0, step=1)
    lg.log_param("lr", 0.1)
    gate.set()
    lg.flush(10)
    assert [m.step for m in client.metrics()] == [1]
    assert lg.status()["dropped"] == 1
    assert "params lr" in capsys.readouterr().err


def test_close_sends_everything_then_refuses_more(client, make_logger):
    lg = make_logger(client)
    for step in range(50):
        lg.log_metric("loss", 1.0, step=step)
    lg.close(10)
    assert len(client.metrics()) == 50 and lg.closed and "closed" in repr(lg)
    with pytest.raises(RuntimeError, match="closed"):
        lg.log_metric("loss", 1.0)


def test_close_gives_up_at_its_deadline_during_an_outage(client, make_logger):
    client.down = True
    lg = make_logger(client)
    lg.log_metrics({"a": 1.0, "b": 2.0})
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"2 item\(s\).*lost"):
        lg.close(1.0)
    assert time.monotonic() - start < 3


def test_close_all_reports_what_could_not_be_sent(make_logger, capsys):
    up, down = FakeClient(), FakeClient()
    down.down = True
    a, b = make_logger(up), make_logger(down)
    a.log_metric("loss", 1.0)
    b.log_metric("loss", 1.0)
    assert fastlog.close_all(0.5) == 1
    assert len(up.metrics()) == 1
    assert "1 item(s) for MLflow run run1 could not be sent before exit" in capsys.readouterr().err
    assert not fastlog._LIVE or all(lg.closed for lg in fastlog._LIVE)


def test_interpreter_exit_sends_the_backlog(tmp_path):
    """The atexit hook: a script logs 3000 points to a slow client and exits at once."""
    out = tmp_path / "received.txt"
    script = textwrap.dedent(f"""
        import time
        from hubml.extensions.tracking.fastlog import BatchLogger

        class Slow:
            def log_batch(self, run_id, metrics=(), params=(), tags=()):
                time.sleep(0.05)
                with open({str(out)!r}, "a") as f:
                    f.write("".join(f"{{m.step}}\\n" for m in metrics))

        lg = BatchLogger("run1", Slow())
        for step in range(3000):
            lg.log_metric("loss", 0.1, step=step)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert sorted(int(s) for s in out.read_text().split()) == list(range(3000))


# --- error classification and the HTTP sender (need mlflow) -------------------------------------


def test_retryable_errors():
    import requests

    assert fastlog.is_retryable(ConnectionError("refused"))
    assert fastlog.is_retryable(requests.ConnectionError("refused"))
    assert fastlog.is_retryable(TimeoutError())
    assert fastlog.is_retryable(Refused("busy", "TEMPORARILY_UNAVAILABLE"))
    assert not fastlog.is_retryable(Refused("bad"))
    assert not fastlog.is_retryable(ValueError("bug"))


def test_mlflow_errors_are_classified():
    pytest.importorskip("mlflow")
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST

    assert fastlog.is_retryable(MlflowException("API request to ... failed with exception refused"))
    assert not fastlog.is_retryable(MlflowException("bad", error_code=INVALID_PARAMETER_VALUE))
    assert not fastlog.is_retryable(MlflowException("no run", error_code=RESOURCE_DOES_NOT_EXIST))


def test_http_sender_fails_fast_without_mlflows_retries(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from tests.hubprocess import free_port

    sender = fastlog.sender_for(MlflowClient(f"http://127.0.0.1:{free_port()}"))
    assert isinstance(sender, fastlog.HttpLogBatch)
    start = time.monotonic()
    with pytest.raises(Exception) as err:  # noqa: B017 - MLflow wraps the connection error
        sender.log_batch("0" * 32, metrics=[Metric("loss", 1.0, 1, 0)])
    assert time.monotonic() - start < 2.0  # MLflow's default: 7 retries with backoff, minutes
    assert fastlog.is_retryable(err.value)
    assert isinstance(
        fastlog.sender_for(MlflowClient(f"sqlite:///{tmp_path}/x.db")), fastlog.ClientLogBatch
    )
    fake = FakeClient()
    assert fastlog.sender_for(fake) is fake


def test_a_long_outage_keeps_at_most_the_backlog_cap_and_says_so(client, make_logger, capsys):
    client.down = True
    lg = make_logger(client, max_backlog=100)
    lg.log_param("lr", 0.1)
    for step in range(150):
        lg.log_metric("loss", 0.5, step=step)
    lg.log_params({"epochs": 3})  # params and tags are kept even when it is full
    lg.set_tag("phase", "train")
    status = lg.status()
    assert status["pending"] == 102 and status["overflow"] == 51, status
    assert "overflow=51" in repr(lg)
    err = capsys.readouterr().err
    assert err.count("backlog of run run1 is full (100 items") == 1, err
    deadline = time.monotonic() + 10
    while lg.status()["outage_since"] is None:  # the sender has met the outage
        assert time.monotonic() < deadline
        time.sleep(0.01)
    client.down = False
    lg.flush(10)
    assert [m.step for m in client.metrics()] == list(range(99))
    params = {p.key for call in client.calls for p in call[1]}
    assert params == {"lr", "epochs"}
    assert "51 metric point(s) were not kept" in capsys.readouterr().err
    with pytest.raises(ValueError, match="max_backlog"):
        BatchLogger("run1", client, max_backlog=0)
