"""The panels wait out a restarting service: nothing a person clicked is lost, nothing is sent
twice."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest
import requests

from hubml.widgets._http import call
from tests.hubprocess import free_port


class Service:
    """A tiny JSON service that answers ``answers`` in turn (then 200), counting requests."""

    def __init__(self, port: int, answers=()):
        self.port, self.answers, self.seen = port, list(answers), []
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                service.seen.append((self.command, self.rfile.read(length)))
                status = service.answers.pop(0) if service.answers else 200
                body = json.dumps({"message": f"answer {status}"}).encode()
                self.send_response(status)
                if status == 503:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def later():
    started = []

    def start(port, after_s, answers=()):
        def go():
            time.sleep(after_s)
            started.append(Service(port, answers))

        t = threading.Thread(target=go)
        t.start()
        return t, started

    yield start
    for s in started:
        s.close()


def test_a_click_while_the_service_restarts_is_sent_once_it_is_back(later):
    port = free_port()
    thread, started = later(port, 1.5)
    status, data, _ = call("POST", f"http://127.0.0.1:{port}/api/jobs/j/runs", "t", body={"a": 1})
    thread.join()
    assert status == 200 and data == {"message": "answer 200"}
    assert started[0].seen == [("POST", b'{"a": 1}')]  # sent once, when it could arrive


def test_a_read_answered_503_is_asked_again_a_write_is_not():
    port = free_port()
    service = Service(port, answers=[503, 503])
    try:
        status, _, _ = call("GET", f"http://127.0.0.1:{port}/api/jobs", "t")
        assert status == 200 and [m for m, _ in service.seen] == ["GET", "GET", "GET"]
        service.answers = [503]
        status, data, _ = call("POST", f"http://127.0.0.1:{port}/api/jobs", "t", body={})
        assert status == 503 and data["message"] == "answer 503"
        assert [m for m, _ in service.seen].count("POST") == 1
    finally:
        service.close()


def test_a_service_that_stays_away_is_an_error_after_the_window():
    port = free_port()
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        call("POST", f"http://127.0.0.1:{port}/api/jobs", "t", body={}, retry_s=1.0)
    assert time.monotonic() - started < 5
