"""hubml's fast logging against a real MLflow server (issue 3, acceptance 1).

The server is stopped while a training thread is logging, and started again on the same port
with the same SQLite store: every metric point must arrive exactly once. Once with a graceful
stop (SIGTERM) and once with SIGKILL, where a request may be committed without its answer
arriving, so the logger re-sends it and the store's de-duplication is what keeps it single.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from hubml.extensions.tracking.fastlog import BatchLogger
from tests.hubprocess import free_port
from tests.mlflowserver import start_mlflow

pytestmark = pytest.mark.integration

N = 3000


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _kill(server) -> None:
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(30)


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_every_metric_arrives_exactly_once_across_a_server_restart(tmp_path, stop):
    from mlflow import MlflowClient

    port = free_port()
    servers = [start_mlflow(tmp_path / "mlflow", port=port)]
    logger = None
    try:
        client = MlflowClient(servers[0].url)
        run_id = client.create_run(client.create_experiment("outage")).info.run_id
        logger = BatchLogger(run_id, client)
        logged = 0
        slowest_call = 0.0

        def train():
            nonlocal logged, slowest_call
            for step in range(N):
                start = time.perf_counter()
                logger.log_metric("loss", 1.0 / (step + 1), step=step)
                slowest_call = max(slowest_call, time.perf_counter() - start)
                logged = step + 1
                if step % 100 == 99:
                    time.sleep(0.15)  # 30 pauses: the loop spans about 4.5 s

        trainer = threading.Thread(target=train)
        trainer.start()
        _wait(lambda: logger.status()["sent"] >= 300, 30, "the first points to arrive")
        if stop == "sigterm":
            servers[0].stop()
        else:
            _kill(servers[0])
        logged_at_stop = logged
        assert 0 < logged_at_stop < N, "the server must go down while the loop is logging"

        _wait(lambda: logger.status()["outage_since"] is not None, 30, "the outage to be noticed")
        trainer.join(60)  # the loop finishes while the server is down: it never waits for it
        assert not trainer.is_alive()
        # A call waiting for the server would take as long as the outage (seconds); allow for
        # scheduling hiccups of a busy 2-core machine, not for waiting.
        assert slowest_call < 0.5, f"a log call took {slowest_call:.3f}s"
        status = logger.status()
        assert status["pending"] > 0 and status["retries"] >= 1 and status["last_error"]
        assert status["pending"] == N - status["sent"]
        assert f"pending={status['pending']}" in repr(logger)
        with pytest.raises(TimeoutError, match=r"item\(s\) .* not yet sent"):
            logger.flush(0.5)

        servers.append(start_mlflow(tmp_path / "mlflow", port=port))  # same port, same store
        logger.flush(120)
        status = logger.status()
        assert status["pending"] == 0 and status["sent"] == N and status["dropped"] == 0
        assert status["outage_since"] is None

        history = client.get_metric_history(run_id, "loss")
        steps = sorted(m.step for m in history)
        assert len(steps) == N, f"{len(steps)} rows for {N} points"
        assert steps == list(range(N))
        assert all(m.value == 1.0 / (m.step + 1) for m in history)
        logger.close(10)
    finally:
        if logger is not None and not logger.closed:
            logger._begin_close(0)
        for server in servers:
            server.stop()


def test_track_api_end_to_end(tmp_path, monkeypatch):
    """track.start_run goes through mlflow.start_run (so run-context tags apply), sends what the
    loop logged before the run ends, and reports the delivery."""
    import mlflow

    from hubml.extensions.tracking import track

    monkeypatch.setenv("HUBML_USER", "alice")  # turns on hubml's run-context provider
    # an experiment another module made active on its own server means nothing on this one
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    server = start_mlflow(tmp_path / "mlflow")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(server.url)
    try:
        with track.start_run(experiment="track-e2e", run_name="fast") as run:
            track.log_params({"lr": 0.01, "epochs": 3})
            track.set_tag("phase", "train")
            for step in range(2500):
                track.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 2500}, step=step)
            with pytest.raises(ValueError, match="finite"):
                track.log_metric("loss", float("nan"))
        status = track.status()
        assert status["run_id"] == run.info.run_id
        assert status["pending"] == 0 and status["sent"] == 5003 and status["closed"]

        client = mlflow.MlflowClient()
        finished = client.get_run(run.info.run_id)
        assert finished.info.status == "FINISHED"
        assert finished.data.params == {"lr": "0.01", "epochs": "3"}
        assert finished.data.tags["phase"] == "train"
        assert finished.data.tags["hubml.user"] == "alice"
        assert client.get_experiment(finished.info.experiment_id).name == "track-e2e"
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "acc")) == list(
            range(2500)
        )

        # A run started with mlflow directly: track logs to it too, flush() sends it.
        with mlflow.start_run() as plain:
            track.log_metric("x", 1.0, step=1)
            track.flush(30)
            assert [m.value for m in client.get_metric_history(plain.info.run_id, "x")] == [1.0]
    finally:
        track.flush(30)
        mlflow.set_tracking_uri(previous)
        server.stop()
