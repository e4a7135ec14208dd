"""Connections cannot hold a server: idle keep-alives, half-sent request heads and HTTP/2
prefaces that never come are closed within IDLE_TIMEOUT_SECS on every listener (the app's
HTTP port, the model's gRPC and metrics ports); SIGTERM ends within SHUTDOWN_TIMEOUT_SECS
whatever clients hold; running out of file descriptors is logged and heals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request

from conftest import addr, figure, local, procs
from smsdev.promtext import metric

PARTIAL_HTTP = b"POST /sms/ HTTP/1.1\r\nHost: sms\r\nContent-Type: application/json\r\n"
PARTIAL_PREFACE = b"PRI * HTTP/2.0\r\n"  # 16 of the 24 preface bytes
IDLE = 2


def hold(address: str, send: bytes = b"") -> socket.socket:
    host, port = address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    if send:
        s.sendall(send)
    return s


def idle_keep_alive(address: str, path: str) -> socket.socket:
    """A connection that made one complete request (keep-alive) and then says nothing."""
    s = hold(address, f"GET {path} HTTP/1.1\r\nHost: sms\r\n\r\n".encode())
    assert s.recv(4096).startswith(b"HTTP/1.1 200"), "the first request was not answered"
    return s


def taken_grpc(address: str) -> socket.socket:
    """A gRPC connection the server has taken, not just the kernel queued: the server's
    HTTP/2 SETTINGS frame has come (it sends one on accepting, before the client speaks).
    Connections queued at once are taken in no set order across the listen queues."""
    s = hold(address)
    head = b""
    while len(head) < 9 and (chunk := s.recv(9 - len(head))):
        head += chunk
    assert len(head) == 9 and head[3] == 0x04, f"the server did not take the connection (no SETTINGS): {head!r}"
    return s


def seconds_until_closed(s: socket.socket, since: float, limit: float) -> float:
    """Reads (and drops) what the server sends until it closes the connection; the
    seconds from `since` (when the client stopped sending)."""
    s.settimeout(limit)
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        return float("inf")
    finally:
        s.close()
    return time.monotonic() - since


def start_both(stack, app_env: dict | None = None, **env):
    model = local.model(grpc=addr(), metrics=addr(), MODEL_RELOAD_SECS="0", **env)
    stack.up(model)
    app = local.app(http=addr(), model_host=f"http://{model.addresses['grpc']}", **env, **(app_env or {}))
    stack.up(app)
    return model, app


def host_port(url: str) -> str:
    return url.split("//", 1)[1].split("/", 1)[0]


def holders(model, app) -> dict[str, tuple[socket.socket, float]]:
    """One connection of each kind that holds a listener, and when it last sent."""
    web, metrics, grpc = host_port(app.addresses["url"]), host_port(model.addresses["metrics"]), model.addresses["grpc"]
    opened = {
        "app: partial request head": lambda: hold(web, PARTIAL_HTTP),
        "app: idle keep-alive": lambda: idle_keep_alive(web, "/livez"),
        "model metrics: partial request head": lambda: hold(metrics, PARTIAL_HTTP),
        "model metrics: idle keep-alive": lambda: idle_keep_alive(metrics, "/metrics"),
        "model gRPC: nothing sent": lambda: hold(grpc),
        "model gRPC: partial HTTP/2 preface": lambda: hold(grpc, PARTIAL_PREFACE),
    }
    return {what: (open_one(), time.monotonic()) for what, open_one in opened.items()}


def test_idle_and_half_open_connections_are_closed_within_the_idle_timeout(stack):
    model, app = start_both(stack, IDLE_TIMEOUT_SECS=str(IDLE))
    for what, (s, since) in holders(model, app).items():
        took = seconds_until_closed(s, since, limit=IDLE + 5)
        figure(f"idle timeout {IDLE} s: {what}: closed after {took:.2f} s")
        assert IDLE * 0.5 <= took <= IDLE + 2, f"{what}: closed after {took:.2f} s (idle timeout {IDLE} s)"
    assert procs.http_ok(app.addresses["url"] + "/readyz"), "the app does not answer after closing idle connections"


def test_sigterm_ends_within_its_bound_while_clients_hold_connections(stack):
    bound = 2
    model, app = start_both(stack, IDLE_TIMEOUT_SECS="300", SHUTDOWN_TIMEOUT_SECS=str(bound))
    held = holders(model, app)
    both = {p.name: p for p in stack.procs}
    start = time.monotonic()
    for p in both.values():
        p.terminate()
    for name, p in both.items():
        code = p.popen.wait(timeout=bound + 30)
        took = time.monotonic() - start
        figure(f"SIGTERM with {len(held)} half-open connections held, SHUTDOWN_TIMEOUT_SECS={bound}: "
               f"{name} exited {code} after {took:.2f} s")
        assert code == 0, p.tail()
        assert took <= bound + 2, f"{name} took {took:.2f} s to stop (bound {bound} s)"
        assert "still open" in p.log(), f"{name} did not say it closed held connections:\n{p.tail()}"
    for s, _ in held.values():
        s.close()


def test_running_out_of_file_descriptors_is_logged_and_heals(stack):
    app = local.app(http=addr(), model_host="http://127.0.0.1:9", wait_for_model=False,
                    IDLE_TIMEOUT_SECS=str(IDLE))
    proc = stack.up(app)
    subprocess.run(["prlimit", f"--pid={proc.pid}", "--nofile=64:64"], check=True)
    web = host_port(app.addresses["url"])
    held = [hold(web, PARTIAL_HTTP) for _ in range(80)]  # more than the process may open
    procs.poll(lambda: "cannot accept a connection" in proc.log(), 10, "the app to log that it cannot accept")
    # The held connections time out, and new ones are served again.
    healed = procs.poll(lambda: procs.http_ok(app.addresses["url"] + "/livez", timeout=1), IDLE + 10,
                        "the app to answer again")
    for s in held:
        s.close()
    figure(f"80 half-open connections against a 64-descriptor app: refusals logged, answering again: {healed}")
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.popen.wait(timeout=30) == 0


def test_connections_over_max_connections_are_refused_at_once(stack):
    # The app holds a model connection per runtime worker: two of the model's 4 gRPC slots
    # (opened by its readiness check's call); the other 2 are taken before the 5th
    # connection comes, or which of them is refused would be a race.
    workers = 2
    model, app = start_both(stack, app_env={"RUNTIME_THREADS": str(workers)}, MAX_CONNECTIONS="4")
    web, grpc = host_port(app.addresses["url"]), model.addresses["grpc"]
    held = [idle_keep_alive(web, "/livez") for _ in range(4)] + [taken_grpc(grpc) for _ in range(4 - workers)]
    start = time.monotonic()
    over = hold(web, b"GET /livez HTTP/1.1\r\nHost: sms\r\n\r\n")
    answer = over.recv(4096)
    assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer, answer
    assert seconds_until_closed(over, start, limit=5) < 1, "the refused HTTP connection was not closed at once"
    # gRPC: closed at once (the server's SETTINGS never come); a client sees UNAVAILABLE.
    start = time.monotonic()
    took = seconds_until_closed(hold(grpc), start, limit=5)
    assert took < 1, f"the refused gRPC connection stayed open {took:.2f} s"
    for s in held:
        s.close()
    # Slots free again once the held connections are gone.
    procs.poll(lambda: procs.http_ok(app.addresses["url"] + "/readyz", timeout=1), 10, "the app to accept again")
    # Each refusal is counted where dashboards see it.
    app_page = urllib.request.urlopen(app.addresses["metrics"], timeout=5).read().decode()
    model_page = urllib.request.urlopen(model.addresses["metrics"], timeout=5).read().decode()
    # (the 5th connection, and any readiness poll that came before a closed slot was free)
    assert metric(app_page, "sms_refused_connections_total") >= 1
    assert metric(model_page, "sms_model_refused_connections_total", listener="grpc") == 1
    assert metric(model_page, "sms_model_refused_connections_total", listener="metrics") == 0
    figure("MAX_CONNECTIONS=4: a 5th HTTP connection answered 503 with Retry-After and closed, "
           f"a 5th gRPC connection closed after {took:.3f} s; accepted again once the 4 closed")


def test_connections_wait_in_the_listen_queues_while_the_server_is_busy(stack):
    """A server that cannot accept for a moment (here: stopped) still takes connections
    into the kernel's listen queues, so a burst of clients waits its turn instead of having
    connection attempts dropped and retried a second or more later. One queue holds 4,096
    (capped by somaxconn); each listener has four (SO_REUSEPORT). Tokio's default queue (128)
    took 129 and dropped the rest; one queue of 4,096 took 4,097 of these 6,000."""
    import resource
    import select

    wanted = 6000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == resource.RLIM_INFINITY or hard >= wanted + 200, f"this test needs {wanted + 200} descriptors"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted + 200), hard))
    somaxconn = int(open("/proc/sys/net/core/somaxconn").read())
    app = local.app(http=addr(), model_host="http://127.0.0.1:9", wait_for_model=False)
    proc = stack.up(app)
    host, port = host_port(app.addresses["url"]).rsplit(":", 1)
    os.kill(proc.pid, signal.SIGSTOP)
    sockets = []
    try:
        for _ in range(wanted):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((host, int(port)))
            sockets.append(s)
        # A connection is established once the kernel answered the handshake (writable, no error).
        poller, by_fd = select.poll(), {s.fileno(): s for s in sockets}
        for fd in by_fd:
            poller.register(fd, select.POLLOUT)
        established, deadline = 0, time.monotonic() + 1
        while by_fd and time.monotonic() < deadline:
            for fd, _ in poller.poll(100):
                poller.unregister(fd)
                established += by_fd.pop(fd).getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        for s in sockets:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    # Four queues of backlog + 1; the kernel spreads connections over them by a hash, so
    # with a low somaxconn only more than one queue's worth is certain.
    one_queue = min(4096, somaxconn) + 1
    expected = wanted if 4 * one_queue >= 2 * wanted else min(wanted, 2 * one_queue)
    assert established >= expected, f"{established} of {wanted} connections were taken while the server was stopped"
    procs.poll(lambda: procs.http_ok(app.addresses["url"] + "/livez", timeout=1), 10, "the app to answer again")
    figure(f"app stopped (SIGSTOP): {established} of {wanted} new connections taken into its listen queues "
           f"(somaxconn {somaxconn}); answering again after SIGCONT")


def test_a_port_another_copy_holds_is_refused(stack):
    """The queues share their port (SO_REUSEPORT), which would let a second copy of the
    service bind it too and silently take some of the first one's connections: a taken port
    stops the second at start-up, in one line that names the setting."""
    taken = addr()
    stack.up(local.app("first", http=taken, model_host="http://127.0.0.1:9", wait_for_model=False))
    second = stack.launch(local.app("second", http=taken, model_host="http://127.0.0.1:9", wait_for_model=False))
    assert second.popen.wait(timeout=30) != 0
    lines = second.log().splitlines()
    assert len(lines) == 1 and f"cannot listen for HTTP on {taken} (HTTP_ADDR)" in lines[0], lines
    grpc = addr()
    stack.up(local.model("model-first", grpc=grpc, metrics=addr(), MODEL_RELOAD_SECS="0"))
    second = stack.launch(local.model("model-second", grpc=grpc, metrics=addr(), MODEL_RELOAD_SECS="0"))
    assert second.popen.wait(timeout=30) != 0
    lines = second.log().splitlines()
    assert len(lines) == 1 and f"cannot listen for gRPC on {grpc} (GRPC_ADDR)" in lines[0], lines
