"""The gate probe runs a candidate model in a sandboxed child: real MLflow models, real children.

Each probe starts Python and mlflow (seconds). As root (CI) every probe runs as the account
``hubml-gatetest``, as the service runs it as the model's author; otherwise as this user.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

from hubml.extensions.tracking import gaterun, gatesandbox
from hubml.extensions.tracking.gatesandbox import output_problem, probe_isolated
from tests.gaterunutil import live_processes, report_in, save_code_model, save_sklearn_model

ROOT = os.geteuid() == 0
GATE_ACCOUNT = "hubml-gatetest"
# long enough for the child to start Python, import mlflow and load the model, on a slow machine
TIMEOUT_S = 20


@pytest.fixture(scope="module")
def account(tmp_path_factory):
    """The account probes run as: a fresh unprivileged one as root; ignored otherwise."""
    if not ROOT:
        return GATE_ACCOUNT
    from hubml.hub_config import accounts

    # as the hub does at start: the account must reach the platform's Python (a fresh clone's
    # folder may be 0700)
    for path in accounts.platform_python():
        accounts.make_traversable(path)
    return accounts.ensure_account(GATE_ACCOUNT, tmp_path_factory.mktemp("run")).pw_name


def test_a_good_sklearn_model_passes_with_one_latency_per_trial(tmp_path, account):
    probe = probe_isolated(save_sklearn_model(tmp_path, rows=5), 7, account=account)

    assert probe.ok, probe.reason
    assert probe.reason == (
        "predicted 5 rows of the input example; output ndarray matches the signature"
    )
    assert probe.rows == 5
    assert len(probe.latencies_ms) == 7
    assert all(ms >= 0 for ms in probe.latencies_ms)
    assert probe.output["rows"] == 5
    assert probe.output["columns"] == [("0", "int64", "i")]
    assert probe.output["signature"] == [(None, "long")]
    assert probe.resources["memory_cap_mb"] == gatesandbox.DEFAULT_MEMORY_MB
    assert probe.resources["vm_peak_mb"] < gatesandbox.DEFAULT_MEMORY_MB


def test_a_model_that_never_returns_is_killed_at_the_timeout_with_its_whole_group(
    tmp_path, account
):
    model_dir = save_code_model(
        tmp_path,
        """
        import json, os, subprocess, sys, time
        helper = subprocess.Popen(["sleep", "1000"])
        pids = {"pid": os.getpid(), "pgid": os.getpgid(0), "helper": helper.pid}
        print("PIDS " + json.dumps(pids), file=sys.stderr, flush=True)
        time.sleep(10**6)
        """,
    )

    probe = probe_isolated(model_dir, 3, timeout_s=TIMEOUT_S, account=account)

    assert not probe.ok
    assert probe.reason == f"predict did not return within {TIMEOUT_S} s"
    assert probe.latencies_ms is None
    pids = report_in(probe.stderr_tail, "PIDS")
    assert pids["pgid"] == pids["pid"]  # the child leads its own group
    assert pids["pgid"] != os.getpgid(0)
    assert live_processes({pids["pid"], pids["helper"]}, pids["pgid"]) == []


def test_a_model_that_allocates_past_the_cap_runs_out_of_memory(tmp_path, account):
    model_dir = save_code_model(
        tmp_path,
        """
        hoard = bytearray(8 << 30)
        return [len(hoard)] * len(model_input)
        """,
    )

    probe = probe_isolated(model_dir, 3, account=account)

    assert not probe.ok
    assert probe.reason == f"the model ran out of memory (cap {gatesandbox.DEFAULT_MEMORY_MB} MiB)"


def test_the_model_sees_none_of_the_services_environment(tmp_path, account, monkeypatch):
    for name, value in {
        "JUPYTERHUB_API_TOKEN": "hub-token-s3cret",
        "HUBML_MLFLOW_FRONT_DOOR_SECRET": "front-door-s3cret",
        "MLFLOW_TRACKING_TOKEN": "mlflow-s3cret",
        "DATABASE_URL": "postgresql://registry:db-s3cret@localhost/mlflow",
        "GATETEST_PLANTED": "planted-s3cret",
    }.items():
        monkeypatch.setenv(name, value)
    model_dir = save_code_model(
        tmp_path,
        """
        import json, os, sys
        print("ENV " + json.dumps(sorted(os.environ)), file=sys.stderr, flush=True)
        leaks = [
            k for k, v in os.environ.items()
            if k.startswith(("JUPYTERHUB_", "HUBML_", "MLFLOW_")) or "s3cret" in v
        ]
        if leaks:
            raise RuntimeError(f"the service's environment leaked: {leaks}")
        return [0] * len(model_input)
        """,
    )

    probe = probe_isolated(model_dir, 2, account=account)

    assert probe.ok, probe.reason
    assert report_in(probe.stderr_tail, "ENV") == sorted(gaterun.make_child_env("/x"))
    assert "s3cret" not in json.dumps(probe.to_dict())


@pytest.mark.parametrize(
    "body, reason",
    [
        (
            'raise RuntimeError("feature store unreachable")',
            "test inference on the input example failed: RuntimeError: feature store unreachable",
        ),
        (
            'import os, sys\nprint("giving up: no GPU", file=sys.stderr, flush=True)\nos._exit(3)',
            "the model crashed in predict (exit status 3): giving up: no GPU",
        ),
        (
            "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)",
            "the model crashed in predict (signal SIGSEGV)",
        ),
    ],
    ids=["raises", "exits", "segfaults"],
)
def test_a_model_that_crashes_fails_with_a_readable_reason(tmp_path, account, body, reason):
    probe = probe_isolated(save_code_model(tmp_path, body), 2, account=account)

    assert not probe.ok
    assert probe.reason == reason


def test_the_model_runs_as_the_given_account_and_cannot_read_roots_files(tmp_path, account):
    # a folder anyone may traverse, holding a file only its owner may read
    folder = tempfile.mkdtemp(prefix="hubml-gatetest-")
    os.chmod(folder, 0o711)
    secret = os.path.join(folder, "secret.txt")
    with open(os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write("owner-only")
    model_dir = save_code_model(
        tmp_path,
        f"""
        import json, os, sys
        seen = {{"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}}
        for key, path in [("secret", {secret!r}), ("parent_environ", f"/proc/{{os.getppid()}}/environ")]:
            try:
                with open(path, "rb") as f:
                    seen[key] = "read " + str(len(f.read())) + " bytes"
            except OSError as e:
                seen[key] = type(e).__name__
        print("SEEN " + json.dumps(seen), file=sys.stderr, flush=True)
        return [0] * len(model_input)
        """,
    )
    try:
        probe = probe_isolated(model_dir, 1, account=account)
    finally:
        os.remove(secret)
        os.rmdir(folder)

    assert probe.ok, probe.reason
    seen = report_in(probe.stderr_tail, "SEEN")
    if ROOT:
        import pwd

        pw = pwd.getpwnam(account)
        assert (seen["uid"], seen["gid"], seen["groups"]) == (pw.pw_uid, pw.pw_gid, [pw.pw_gid])
        assert probe.resources["uid"] == pw.pw_uid
        assert seen["secret"] == "PermissionError"
        assert seen["parent_environ"] == "PermissionError"
    else:
        # not root: the child is this user (the shared trust domain) and reads what it reads
        assert seen["uid"] == os.getuid()
        assert seen["secret"] == "read 10 bytes"


def test_as_root_a_probe_needs_an_account(tmp_path):
    model_dir = str(tmp_path)  # never reached
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    if ROOT:
        with pytest.raises(ValueError, match="pass account="):
            probe_isolated(model_dir, 1)
        with pytest.raises(ValueError, match="no such Unix account"):
            probe_isolated(model_dir, 1, account="hubml-no-such-account")
    else:
        assert gatesandbox._child_account("hubml-no-such-account") is None


def test_a_folder_without_an_mlmodel_file_fails_without_starting_a_child(tmp_path):
    probe = probe_isolated(str(tmp_path), 1, account=GATE_ACCOUNT)

    assert not probe.ok
    assert probe.reason == f"{tmp_path} is not an MLflow model directory (it has no MLmodel file)"


@pytest.mark.parametrize(
    "kwargs",
    [{"trials": -1}, {"trials": True}, {"timeout_s": 0}, {"memory_mb": 10}],
)
def test_bad_arguments_are_refused(tmp_path, kwargs):
    args = {"trials": 1, **kwargs}
    with pytest.raises(ValueError):
        probe_isolated(str(tmp_path), args.pop("trials"), **args)


# -- the verdict on the child's description of a prediction (pure) -------------------------


def describe(output):
    return json.loads(json.dumps(gaterun.describe_output(output)))


def test_output_problem_accepts_what_matches_the_signature():
    import numpy as np
    import pandas as pd

    assert output_problem(describe(np.array([1, 2, 3])), [(None, "long")], 3) is None
    frame = pd.DataFrame({"label": [1, 0], "score": [0.5, 0.25]})
    assert output_problem(describe(frame), [("score", "double"), ("label", "long")], 2) is None
    # ints satisfy a float declaration; tensors are checked for rows only
    assert (
        output_problem(describe([[1, 2], [3, 4]]), [(None, "double"), (None, "float")], 2) is None
    )
    assert output_problem(describe(np.zeros((2, 3, 4))), [(None, "double")], 2) is None


@pytest.mark.parametrize(
    "output, expected, rows, problem",
    [
        (7, [(None, "long")], 1, "the prediction is a single int, not one value per input row"),
        ([1, 2], [(None, "long")], 3, "the prediction has 2 rows for 3 input rows"),
        (
            [[1, 2], [3, 4]],
            [(None, "long")],
            2,
            "the prediction has 2 columns; the signature declares 1",
        ),
        (
            ["a", "b"],
            [(None, "double")],
            2,
            "the output has dtype <U1; the signature declares double",
        ),
    ],
    ids=["scalar", "rows", "columns", "dtype"],
)
def test_output_problem_says_what_is_wrong(output, expected, rows, problem):
    assert output_problem(describe(output), expected, rows) == problem


def test_output_problem_says_a_ragged_prediction_is_not_array_like():
    problem = output_problem(describe([[1], [2, 3]]), [(None, "long")], 2)
    assert problem.startswith("the prediction (list) is not array-like: ")


def test_output_problem_names_missing_and_mistyped_columns():
    import pandas as pd

    frame = pd.DataFrame({"label": ["x", "y"]})
    assert output_problem(describe(frame), [("score", "double")], 2) == (
        "the prediction lacks the signature's output columns ['score'] (it has ['label'])"
    )
    assert output_problem(describe(frame), [("label", "long")], 2).startswith(
        "column 'label' has dtype "
    )


def test_importing_the_module_imports_no_heavy_library():
    code = (
        "import sys, json, hubml.extensions.tracking.gaterun, "
        "hubml.extensions.tracking.gatesandbox, hubml.extensions.tracking.gatesupervisor; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert not set(json.loads(out)) & {"mlflow", "numpy", "pandas", "sklearn"}
