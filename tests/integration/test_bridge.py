"""The server extension tells a kernel which notebook it runs, with the content as saved."""

import pytest

from tests.kernelclient import ServerKernel

pytestmark = pytest.mark.integration


def test_kernel_learns_its_notebook_from_the_server(hub_factory):
    hub = hub_factory()
    token = hub.user_token("alice")
    hub.spawn("alice", {"profile": "cpu-small"}, token=token)
    hub.wait_ready("alice")
    kernel = ServerKernel(hub, "alice", token, "report.ipynb", cells=["x = 1  # first cell"])
    try:
        out = kernel.execute(
            "from hubml.kernels.context import notebook, Platform\n"
            "nb = notebook()\n"
            "print(nb['path'], nb['content']['cells'][0]['source'], Platform.from_env().profile)\n"
        )
    finally:
        kernel.close()
    assert out.strip() == "report.ipynb x = 1  # first cell cpu-small"


def test_other_users_cannot_ask_my_server(hub_factory):
    import requests

    hub = hub_factory()
    alice, bob = hub.user_token("alice"), hub.user_token("bob")
    hub.spawn("alice", {"profile": "cpu-small"}, token=alice)
    hub.wait_ready("alice")
    r = requests.get(
        hub.at("/user/alice/hubml/api/kernel-context"),
        params={"kernel_id": "x"},
        headers={"Authorization": f"token {bob}"},
        timeout=30,
    )
    assert r.status_code == 403
    r = requests.get(
        hub.at("/user/alice/hubml/api/kernel-context"),
        params={"kernel_id": "nope"},
        headers={"Authorization": f"token {alice}"},
        timeout=30,
    )
    assert r.status_code == 404 and "no notebook session" in r.json()["message"]
