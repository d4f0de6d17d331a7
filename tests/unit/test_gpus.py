"""GPU detection and the shared ledger: one holder per device, nothing leaked."""

import subprocess
import sys
import textwrap

import pytest

from hubml.hub_config.gpus import (
    Device,
    GPULedger,
    GPUUnavailable,
    model_matches,
    parse_nvidia_smi,
)
from tests.gpuhandoff import STEPS, end, kill_service_at


def test_model_tokens_match_driver_names():
    assert model_matches("A100", "NVIDIA A100-SXM4-40GB")
    assert model_matches("H100", "NVIDIA H100 80GB HBM3")
    assert model_matches("T4", "Tesla T4")
    assert model_matches("a10g", "NVIDIA A10G")
    assert not model_matches("A10", "NVIDIA A100-SXM4-40GB")
    assert not model_matches("T4", "Quadro RTX 4000")


def test_parse_nvidia_smi_csv():
    out = "0, NVIDIA H100 80GB HBM3, 81559\n1, NVIDIA H100 80GB HBM3, 81559\n"
    assert parse_nvidia_smi(out) == [
        Device(0, "NVIDIA H100 80GB HBM3", 81559),
        Device(1, "NVIDIA H100 80GB HBM3", 81559),
    ]
    assert parse_nvidia_smi("") == []


def ledger(tmp_path, n=2, model="NVIDIA A100-SXM4-40GB"):
    return GPULedger(tmp_path / "ledger.json", [Device(i, model) for i in range(n)])


def test_each_device_has_one_holder(tmp_path):
    led = ledger(tmp_path)
    assert led.reserve("server:alice/", "A100", 1) == [0]
    assert led.reserve("server:bob/", "A100", 1) == [1]
    with pytest.raises(GPUUnavailable) as info:
        led.reserve("server:carol/", "A100", 1)
    assert str(info.value) == (
        "no free A100: 1 needed, 0 of 2 free (GPU 0 is in use by alice's server, "
        "GPU 1 is in use by bob's server)"
    )
    assert led.availability("A100") == (0, 2)
    assert led.release("server:alice/") == [0]
    assert led.reserve("server:carol/", "A100", 1) == [0]


def test_missing_model_says_so(tmp_path):
    with pytest.raises(GPUUnavailable, match="this host has no H100 GPU"):
        ledger(tmp_path).reserve("x", "H100", 1)


def test_reserving_twice_for_one_owner_does_not_double_book(tmp_path):
    led = ledger(tmp_path)
    assert led.reserve("server:alice/", "A100", 1) == [0]
    assert led.reserve("server:alice/", "A100", 1) == [0]
    assert led.availability("A100") == (1, 2)


def test_holding_of_a_dead_process_is_dropped(tmp_path):
    led = ledger(tmp_path, n=1)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        led.reserve("job:1", "A100", 1, pid=proc.pid)
        assert led.availability("A100") == (0, 1)
    finally:
        proc.kill()
        proc.wait()
    assert led.availability("A100") == (1, 1)


def test_processes_racing_for_one_device_get_it_once(tmp_path):
    """Eight processes reserve the single A100 at once: exactly one wins."""
    script = textwrap.dedent(f"""
        import sys, time
        from hubml.hub_config.gpus import Device, GPULedger, GPUUnavailable
        led = GPULedger({str(tmp_path / "ledger.json")!r}, [Device(0, 'NVIDIA A100')])
        try:
            print(led.reserve(sys.argv[1], 'A100', 1), flush=True)
        except GPUUnavailable:
            print('busy', flush=True)
        time.sleep(2)
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", script, f"p{i}"], stdout=subprocess.PIPE, text=True)
        for i in range(8)
    ]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert outs.count("[0]") == 1 and outs.count("busy") == 7


# -- a hand-off killed midway, and a ledger that cannot be trusted ----------------------------


@pytest.mark.parametrize("step", STEPS)
def test_a_service_killed_at_any_step_of_a_gpu_hand_off_never_makes_two_holders(tmp_path, step):
    """kill -9 of the service at each step, ten times: while its run lives, the device is the
    run's; a run that never started leaves it free."""
    for attempt in range(10):
        ledger_file, lock_file = tmp_path / f"ledger{attempt}.json", tmp_path / f"run{attempt}.lock"
        runner = kill_service_at(step, ledger_file, lock_file)
        led = GPULedger(ledger_file, [Device(0, "NVIDIA A100")])
        if runner is None:  # killed before it started a run: nothing holds the device
            assert step == "reserved"
            assert led.reserve("server:bob/", "A100", 1) == [0]
            continue
        try:
            with pytest.raises(GPUUnavailable, match="in use by job run r1"):
                led.reserve("server:bob/", "A100", 1)
        finally:
            end(runner)
        assert led.reserve("server:bob/", "A100", 1) == [0]


@pytest.mark.parametrize(
    "content, says",
    [
        ("", "empty"),
        ('{"0": {"owner": "server:alice/", "pid": 12', "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"0": "alice"}', "device '0' is not a holding"),
    ],
)
def test_a_truncated_or_garbled_ledger_hands_out_nothing_and_says_so(tmp_path, content, says):
    from hubml.hub_config.gpus import LedgerUnreadable

    led = ledger(tmp_path)
    path = tmp_path / "ledger.json"
    path.write_text(content)
    with pytest.raises(LedgerUnreadable, match=says) as info:
        led.reserve("server:bob/", "A100", 1)
    assert str(path) in str(info.value) and "no GPU is handed out" in str(info.value)
    with pytest.raises(LedgerUnreadable):
        led.availability("A100")
    assert led.release("server:alice/") == []
    assert path.read_text() == content  # never overwritten with an empty ledger


def test_a_garbled_ledger_refuses_gpu_spawns_with_a_readable_message(tmp_path):
    from tests.mocking import local_spawner
    from tests.unit.test_spawner_profiles import apply, status_and_message

    sp = local_spawner(tmp_path, groups=("gpu-users",), inventory=[(0, "Tesla T4")])
    (tmp_path / "gpu-ledger.json").write_text('{"0": {"owner": "server:alice/"')
    code, msg = status_and_message(sp, {"profile": "gpu-t4"})
    assert code == 503 and "GPU ledger is unreadable" in msg and "CPU profiles still start" in msg
    assert not sp.profile_availability(sp.profiles[2]).ok
    cpu = local_spawner(tmp_path)
    apply(cpu, {"profile": "cpu-small"})
    assert cpu.environment["CUDA_VISIBLE_DEVICES"] == ""


def test_holders_are_named_as_people_read_them():
    from hubml.hub_config.gpus import holder_name

    assert holder_name("server:alice/") == "alice's server"
    assert holder_name("server:alice/big") == 'alice\'s server "big"'
    assert holder_name("server:alice/app-demo") == 'alice\'s app "demo"'
    assert holder_name("job:r1") == "job run r1"
