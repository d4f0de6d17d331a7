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
        "no free A100: 1 needed, 0 of 2 free (GPU 0 is in use by server:alice/, "
        "GPU 1 is in use by server:bob/)"
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
