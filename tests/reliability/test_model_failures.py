"""A model that stalls (SIGSTOP 3 s), is killed (SIGKILL) and comes back, under a steady load
on the app: users get only 200s and 503s with Retry-After (never a 502 storm, never a
hang), and answers return to 200 once the model is back."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections import Counter

from conftest import addr, figure, local, procs

CLIENTS = 16


class Load:
    """CLIENTS keep-alive clients posting classifications until stopped."""

    def __init__(self, url: str):
        self.host, port = url.split("//", 1)[1].rsplit(":", 1)
        self.port = int(port)
        self.answers: list[tuple[float, int, str | None]] = []  # (time, status, Retry-After)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(CLIENTS)]

    def client(self, i: int):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        n = 0
        while not self.stopping.is_set():
            n += 1
            body = json.dumps({"sms": f"client {i} message {n}: WIN a free prize now", "guess": "spam"})
            try:
                conn.request("POST", "/sms/", body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                status, retry = r.status, r.getheader("Retry-After")
            except (OSError, http.client.HTTPException) as exc:
                status, retry = 0, repr(exc)  # the app closed or hung: counted as a failure
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            with self.lock:
                self.answers.append((time.monotonic(), status, retry))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=15)

    def since(self, t: float) -> Counter:
        with self.lock:
            return Counter(status for at, status, _ in self.answers if at >= t)


def test_a_stalled_then_killed_model_gives_users_only_200_or_503(stack):
    model = local.model(grpc=addr(), metrics=addr(), MODEL_RELOAD_SECS="0")
    model_proc = stack.up(model)
    app = local.app(http=addr(), model_host=f"http://{model.addresses['grpc']}")
    stack.up(app)

    marks = []  # (what happens from now on, when)
    with Load(app.addresses["url"]) as load:
        marks.append(("steady", time.monotonic()))
        time.sleep(1.5)
        marks.append(("stalled (SIGSTOP 3 s)", time.monotonic()))
        os.kill(model_proc.pid, signal.SIGSTOP)
        time.sleep(3)
        os.kill(model_proc.pid, signal.SIGCONT)
        marks.append(("after SIGCONT", time.monotonic()))
        time.sleep(2)
        marks.append(("killed (SIGKILL), then restarting", time.monotonic()))
        os.kill(model_proc.pid, signal.SIGKILL)
        model_proc.popen.wait(timeout=10)
        model_proc.expected_exit = True
        time.sleep(2)
        stack.up(model)  # the same ports, as a restarted pod behind its Service
        procs.poll(lambda: load.since(time.monotonic() - 0.5)[200] > 0, 30, "answers to succeed again")
        time.sleep(1)
        recovered = time.monotonic()
        marks.append(("restarted", recovered))
        time.sleep(1.5)

    statuses = Counter(status for _, status, _ in load.answers)
    ends = [at for _, at in marks[1:]] + [float("inf")]
    for (name, lo), hi in zip(marks, ends):
        figure(f"model stall/kill under {CLIENTS} clients, {name}: "
               f"{dict(Counter(s for at, s, _ in load.answers if lo <= at < hi))}")
    figure(f"model stall/kill under {CLIENTS} clients, all answers: {dict(statuses)}")
    assert set(statuses) <= {200, 503}, f"answers other than 200/503: {dict(statuses)}"
    assert statuses[503] > 0, "the stall and the kill were not seen by users: the test did not exercise them"
    assert all(retry for _, status, retry in load.answers if status == 503), "a 503 without Retry-After"
    last = Counter(s for at, s, _ in load.answers if at >= recovered)
    assert last and set(last) == {200}, f"not recovered after the restart: {dict(last)}"


def test_a_log_reader_that_stops_reading_does_not_stop_the_services(stack):
    """Both services' output goes into pipes nobody reads during the load (a stalled log
    shipper): answers go on, and the lines arrive whole once the pipe is read again."""
    # A line per call is a debug line of the model (at the chart's info it cost a quarter of
    # the throughput): turned on here, so that every answer writes to the unread pipe.
    model = local.model(grpc=addr(), metrics=addr(), MODEL_RELOAD_SECS="0", LOG_FORMAT="json",
                        RUST_LOG="info,model_service=debug")
    model_proc = stack.up(model, output_to_pipe=True)
    app = local.app(http=addr(), model_host=f"http://{model.addresses['grpc']}", LOG_FORMAT="json")
    stack.up(app, output_to_pipe=True)
    with Load(app.addresses["url"]) as load:
        time.sleep(4)
    statuses = Counter(status for _, status, _ in load.answers)
    figure(f"stdout not read by anyone, {CLIENTS} clients for 4 s: {dict(statuses)}")
    assert set(statuses) == {200} and statuses[200] > 1000, f"the services stalled on their logs: {dict(statuses)}"
    # Read the model's pipe now: every classification's line is there (under the bound).
    os.set_blocking(model_proc.popen.stdout.fileno(), False)
    seen, deadline = b"", time.monotonic() + 10
    while seen.count(b'"classified"') < statuses[200] and time.monotonic() < deadline:
        seen += model_proc.popen.stdout.read() or b""
        time.sleep(0.05)
    lines = [json.loads(line) for line in seen.splitlines() if line.strip()]
    classified = sum(1 for rec in lines if rec.get("message") == "classified")
    figure(f"then read: {classified} 'classified' lines from the model for {statuses[200]} answers")
    assert classified == statuses[200], f"{classified} log lines for {statuses[200]} answers"
