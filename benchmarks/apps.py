"""Gradio apps service (issue 5): publish-to-answering time and request latency through the hub.

One real hub with the apps service on. Publishing: ``samples`` apps with distinct names, each
timed from ``POST services/apps/api/apps`` until a ``gradio_client`` ``predict`` through the
app's hub URL answers (goal <= 15 s); each app is deleted afterwards, except the last one.

Latency, on that last app: a light ``GET config`` and a full ``predict`` (gradio_client: queue
join + SSE stream), each down three paths, round-robin so that machine noise hits all alike:

* proxied: the app's hub URL with a user token: configurable-http-proxy -> the app's front door
  (launcher.py: token checked with the hub, cached REVALIDATE_S = 1 s) -> Gradio;
* front door: the same URL on the front door's own port (no CHP), with the token;
* direct: Gradio's internal 127.0.0.1 port, parsed from ``app.log`` ("Gradio on 127.0.0.1:<p>").
  Gradio's root_path is the hub prefix, yet it answers at ``/`` and gradio_client works there
  (checked: the front door's access log sees none of the direct requests).

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
    r = requests.post(f"{api}apps", json={"name": name, "source": "app.py"}, headers=headers, timeout=180)
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


def _latency(hub, url: str, headers: dict, log: Path) -> dict:
    text = log.read_text(errors="replace")
    m = re.search(r"Gradio on 127\.0\.0\.1:(\d+), front door on :(\d+)", text)
    if not m:
        raise RuntimeError(f"no 'Gradio on 127.0.0.1:<port>' in {log}:\n{text[-2000:]}")
    gradio_port, door_port = m.groups()
    prefix = url.split("/", 3)[3]  # user/<owner>/app-<name>/
    urls = {
        "proxied": url,
        "front_door": f"http://127.0.0.1:{door_port}/{prefix}",
        "direct": f"http://127.0.0.1:{gradio_port}/",
    }
    auth = {"proxied": headers, "front_door": headers, "direct": {}}
    sessions = {p: requests.Session() for p in PATHS}
    for p in PATHS:
        sessions[p].headers.update(auth[p])

    # the direct path really bypasses the front door
    before = _access_lines(log)
    direct = _client(urls["direct"], {})
    assert direct.predict("d", api_name="/greet") == "Hello d!"
    assert sessions["direct"].get(urls["direct"] + "config", timeout=30).status_code == 200
    time.sleep(0.2)
    assert _access_lines(log) == before, "direct requests went through the front door"
    clients = {"proxied": _client(urls["proxied"], headers), "front_door": _client(urls["front_door"], headers),
               "direct": direct}

    def config(p):
        r = sessions[p].get(urls[p] + "config", timeout=30)
        r.raise_for_status()

    def predict(p):
        assert clients[p].predict("y", api_name="/greet") == "Hello y!"

    result: dict = {"urls": urls}
    for kind, call in (("config", config), ("predict", predict)):
        times = {p: [] for p in PATHS}
        for i in range(WARMUP + REQUESTS):
            order = PATHS[i % 3:] + PATHS[:i % 3]
            for p in order:
                t0 = time.perf_counter()
                call(p)
                if i >= WARMUP:
                    times[p].append(time.perf_counter() - t0)
        result[kind] = {
            p: {"median_ms": 1000 * statistics.median(v), "p90_ms": 1000 * statistics.quantiles(v, n=10)[-1]}
            for p, v in times.items()
        }
        result[kind]["ratio"] = result[kind]["proxied"]["median_ms"] / result[kind]["direct"]["median_ms"]
    # what the front door pays once a second per token: the hub's answer about the token
    check = []
    for _ in range(20):
        t0 = time.perf_counter()
        assert hub.api("GET", "user", token=headers["Authorization"].split()[1]).status_code == 200
        check.append(time.perf_counter() - t0)
    result["hub_token_check_ms"] = 1000 * statistics.median(check)
    for s in sessions.values():
        s.close()
    return result


def run(samples: int = 3) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        hub = start_hub(Path(tmp) / "hub", {"apps": {"enabled": True}})
        try:
            api = hub.at("/services/apps/api/")
            deadline = time.monotonic() + 60
            while requests.get(f"{api}apps", headers={"Authorization": f"token {hub.token}"},
                               timeout=30).status_code != 200:
                if time.monotonic() > deadline:
                    raise TimeoutError("the apps service did not answer in 60 s")
                time.sleep(0.3)
            hub.ensure_user(USER)
            r = hub.api("POST", f"users/{USER}/tokens", json={})
            assert r.status_code == 201, r.text
            headers = {"Authorization": f"token {r.json()['token']}"}
            home = hub.data_dir / "homes" / USER
            home.mkdir(parents=True, exist_ok=True)
            (home / "app.py").write_text(GREETER)

            publish = []
            for i in range(samples):
                name = f"bench-{i}"
                seconds, url = _publish(hub, api, headers, name)
                publish.append(seconds)
                if i < samples - 1:
                    assert requests.delete(f"{api}apps/{name}", headers=headers, timeout=60).status_code == 204
            result = _latency(hub, url, headers, hub.data_dir / "apps" / USER / name / "app.log")
            assert requests.delete(f"{api}apps/{name}", headers=headers, timeout=60).status_code == 204
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
    labels = {"proxied": "hub URL (CHP + front door)", "front_door": "front door only (no CHP)",
              "direct": "Gradio direct"}
    for kind, title in (("config", "GET config"), ("predict", "gradio_client predict")):
        lines.append(f"  {title}:")
        for p in PATHS:
            r = result[kind][p]
            lines.append(f"    {labels[p]:<28} {r['median_ms']:7.2f} ms {r['p90_ms']:7.2f} ms")
        c = result[kind]
        chp = c["proxied"]["median_ms"] - c["front_door"]["median_ms"]
        door = c["front_door"]["median_ms"] - c["direct"]["median_ms"]
        lines.append(f"    ratio proxied/direct         {c['ratio']:7.2f} x  (goal <= 1.2x; CHP +{chp:.2f} ms, "
                     f"front door +{door:.2f} ms)")
    lines.append(f"  hub token check (GET /hub/api/user, paid once a second per token) {result['hub_token_check_ms']:.2f} ms")
    return "\n".join(lines)
