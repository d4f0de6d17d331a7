"""Gradio apps service (issue 5): publish-to-answering time and request latency through the hub.

One real hub with the apps service on. Publishing: ``samples`` apps with distinct names, each
timed from ``POST services/apps/api/apps`` until a ``gradio_client`` ``predict`` through the
app's hub URL answers (goal <= 15 s); each app is deleted afterwards, except the last one.

Latency, on that last app: a light ``GET config`` and a full ``predict`` (Gradio's call API:
``POST gradio_api/call/greet`` then its SSE answer), each down three paths, round-robin so that
machine noise hits all alike:

* proxied: the app's URL (its owner's origin) with a user token: configurable-http-proxy -> the
  app's front door (launcher.py: token checked with the hub, cached REVALIDATE_S = 1 s) -> Gradio;
* front door: the same URL on the front door's own port (no CHP), with the token;
* direct: Gradio's own Unix socket in the app's private folder (named in the app's log: "Gradio
  on <socket>"), which only the app's account (and root, running this benchmark) can open;
  checked: the front door's access log sees none of the direct requests.

Goal: proxied / direct <= 1.2x. The front-door path splits the overhead between CHP and the
front door; the hub's token check (``GET /hub/api/user``) is timed too, since one request a
second pays it.
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from pathlib import Path

import requests

from tests.hubprocess import start_hub

USER = "bench"
REQUESTS = 50
WARMUP = 5
GREETER = (
    "import gradio as gr\n\n"
    "def greet(name):\n"
    "    return f'Hello {name}!'\n\n"
    "demo = gr.Interface(greet, 'text', 'text')\n"
)
PATHS = ("proxied", "front_door", "direct")


def _client(url: str, headers: dict):
    from gradio_client import Client

    return Client(url, headers=headers, verbose=False)


def _publish(hub, api: str, headers: dict, name: str, timeout: float = 120) -> tuple[float, str]:
    """Seconds from the POST until predict through the hub answers; and the app's hub URL."""
    t0 = time.perf_counter()
    r = requests.post(
        f"{api}apps",
        json={"name": name, "source": "app.py", "files": {"app.py": GREETER}},
        headers=headers,
        timeout=180,
    )
    if r.status_code != 201:
        raise RuntimeError(f"publishing {name} failed: {r.status_code} {r.text}")
    url = r.json()["url"]
    deadline = t0 + timeout
    while True:
        try:
            answer = _client(url, headers).predict("x", api_name="/greet")
            if answer == "Hello x!":
                return time.perf_counter() - t0, url
            error = f"unexpected answer {answer!r}"
        except Exception as e:  # not answering yet
            error = repr(e)
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{name} did not answer in {timeout:.0f} s: {error}")
        time.sleep(0.1)


def _access_lines(log: Path) -> int:
    return sum("tornado.access" in line for line in log.read_text(errors="replace").splitlines())


def _latency(hub, url: str, headers: dict, reported_log: Path) -> dict:
    import httpx

    deadline = time.monotonic() + 30
    while not (
        m := re.search(
            r"Gradio on (\S+), front door on :(\d+)", reported_log.read_text(errors="replace")
        )
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no 'Gradio on <socket>' in {reported_log}")
        time.sleep(0.2)
    socket_path, door_port = m.groups()
    log = Path(socket_path).parent.parent / "bundle" / "app.log"  # the app's own, live log
    prefix = url.split("/", 3)[3]  # user/<owner>/app-<name>/
    urls = {
        "proxied": url,
        "front_door": f"http://127.0.0.1:{door_port}/{prefix}",
        "direct": "http://app/",
    }
    clients = {
        "proxied": httpx.Client(headers=headers, timeout=30),
        "front_door": httpx.Client(headers=headers, timeout=30),
        "direct": httpx.Client(transport=httpx.HTTPTransport(uds=socket_path), timeout=30),
    }

    def config(p):
        clients[p].get(urls[p] + "config").raise_for_status()

    def predict(p):
        r = clients[p].post(urls[p] + "gradio_api/call/greet", json={"data": ["y"]})
        r.raise_for_status()
        answer = clients[p].get(urls[p] + f"gradio_api/call/greet/{r.json()['event_id']}").text
        assert '"Hello y!"' in answer, answer

    # the direct path really bypasses the front door
    before = _access_lines(log)
    config("direct")
    predict("direct")
    time.sleep(0.2)
    assert _access_lines(log) == before, "direct requests went through the front door"

    result: dict = {"urls": urls}
    for kind, call in (("config", config), ("predict", predict)):
        times = {p: [] for p in PATHS}
        for i in range(WARMUP + REQUESTS):
            order = PATHS[i % 3 :] + PATHS[: i % 3]
            for p in order:
                t0 = time.perf_counter()
                call(p)
                if i >= WARMUP:
                    times[p].append(time.perf_counter() - t0)
        result[kind] = {
            p: {
                "median_ms": 1000 * statistics.median(v),
                "p90_ms": 1000 * statistics.quantiles(v, n=10)[-1],
            }
            for p, v in times.items()
        }
        result[kind]["ratio"] = (
            result[kind]["proxied"]["median_ms"] / result[kind]["direct"]["median_ms"]
        )
    # what the front door pays once a second per token: the hub's answer about the token
    check = []
    for _ in range(20):
        t0 = time.perf_counter()
        assert hub.api("GET", "user", token=headers["Authorization"].split()[1]).status_code == 200
        check.append(time.perf_counter() - t0)
    result["hub_token_check_ms"] = 1000 * statistics.median(check)
    for c in clients.values():
        c.close()
    return result


def run(samples: int = 3) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        hub = start_hub(Path(tmp) / "hub", {"apps": {"enabled": True}})
        try:
            api = hub.at("/services/apps/api/")
            deadline = time.monotonic() + 60
            while (
                requests.get(
                    f"{api}apps", headers={"Authorization": f"token {hub.token}"}, timeout=30
                ).status_code
                != 200
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError("the apps service did not answer in 60 s")
                time.sleep(0.3)
            hub.ensure_user(USER)
            r = hub.api("POST", f"users/{USER}/tokens", json={})
            assert r.status_code == 201, r.text
            headers = {"Authorization": f"token {r.json()['token']}"}

            publish = []
            for i in range(samples):
                name = f"bench-{i}"
                seconds, url = _publish(hub, api, headers, name)
                publish.append(seconds)
                if i < samples - 1:
                    assert (
                        requests.delete(
                            f"{api}apps/{name}", headers=headers, timeout=60
                        ).status_code
                        == 204
                    )
            result = _latency(hub, url, headers, hub.data_dir / "apps" / USER / name / "app.log")
            assert (
                requests.delete(f"{api}apps/{name}", headers=headers, timeout=60).status_code == 204
            )
        finally:
            hub.stop()
    result["publish_s"] = publish
    result["publish_median_s"] = statistics.median(publish)
    result["requests"] = REQUESTS
    return result


def report(result: dict) -> str:
    lines = [
        f"Gradio app published from app.py: POST -> first predict answered through the hub (median of {len(result['publish_s'])}):",
        f"  {result['publish_median_s']:.2f} s  [{', '.join(f'{s:.2f}' for s in result['publish_s'])}]  (goal <= 15 s)",
        f"request latency, one app, {result['requests']} requests per path after warm-up, round-robin:",
        "                                   median      p90",
    ]
    labels = {
        "proxied": "hub URL (CHP + front door)",
        "front_door": "front door only (no CHP)",
        "direct": "Gradio direct",
    }
    for kind, title in (("config", "GET config"), ("predict", "predict (call API + SSE answer)")):
        lines.append(f"  {title}:")
        for p in PATHS:
            r = result[kind][p]
            lines.append(f"    {labels[p]:<28} {r['median_ms']:7.2f} ms {r['p90_ms']:7.2f} ms")
        c = result[kind]
        chp = c["proxied"]["median_ms"] - c["front_door"]["median_ms"]
        door = c["front_door"]["median_ms"] - c["direct"]["median_ms"]
        lines.append(
            f"    ratio proxied/direct         {c['ratio']:7.2f} x  (goal <= 1.2x; CHP +{chp:.2f} ms, "
            f"front door +{door:.2f} ms)"
        )
    lines.append(
        f"  hub token check (GET /hub/api/user, paid once a second per token) {result['hub_token_check_ms']:.2f} ms"
    )
    return "\n".join(lines)
