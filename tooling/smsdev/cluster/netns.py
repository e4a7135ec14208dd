"""The cluster's own network namespace, and the relays that make a few of its services
reachable on this machine's loopback.

Everything of the cluster lives in one network namespace that the cluster creates
(`sms-cluster`): the control plane binds there, the pods' bridge and veths are there,
kube-proxy's nftables rules and the forwarding sysctl are there, so nothing of the
machine's own network is changed. The only doors are the relays: a listener on
127.0.0.1 of the machine whose connections are made from inside the namespace (a thread
that entered it with setns; a socket keeps the namespace it was made in), like a cloud
load balancer in front of a Service.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out


def exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def create(name: str, bridge: str, bridge_cidr: str, service_cidr: str) -> None:
    """The namespace with its loopback up, forwarding on (pods reach Services through
    kube-proxy's rules here), the pods' bridge at `bridge_cidr` (e.g. 198.18.0.1/24) and a
    route for the Services' range, so connections made here (the relays) are routed at all
    before kube-proxy's rules translate them."""
    ip("netns", "add", name)
    ip("-n", name, "link", "set", "lo", "up")
    ip("-n", name, "link", "add", bridge, "type", "bridge")
    ip("-n", name, "addr", "add", bridge_cidr, "dev", bridge)
    ip("-n", name, "link", "set", bridge, "up")
    ip("-n", name, "route", "add", service_cidr, "dev", bridge)
    for key in ("net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet"):
        subprocess.run(["ip", "netns", "exec", name, "sh", "-c", f"echo 1 > /proc/sys/{key}"], check=True)


def delete(name: str) -> None:
    if exists(name):
        ip("netns", "delete", name)


def exec_argv(name: str, argv: list[str]) -> list[str]:
    """`argv` run inside the namespace (`ip netns exec` enters it and execs: same PID)."""
    return ["ip", "netns", "exec", name, *argv]


class Dialer:
    """Makes TCP connections from inside a namespace."""

    def __init__(self, name: str):
        self.name = name
        self.pool = ThreadPoolExecutor(2, thread_name_prefix=f"dial-{name}", initializer=self._enter)

    def _enter(self):
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {self.name}")
        finally:
            os.close(fd)

    def connect(self, host: str, port: int, timeout: float) -> socket.socket:
        s = socket.create_connection((host, port), timeout=timeout)
        s.setblocking(False)
        return s


class Relay:
    """127.0.0.1:`port` on this machine to `target()` (host, port) inside the namespace,
    at most `max_connections` at once (more are closed at once), each connect bounded by
    5 s, each connection ended when either side ends."""

    def __init__(self, dialer: Dialer, port: int, target, name: str, max_connections: int = 1024):
        self.dialer, self.port, self.target, self.name = dialer, port, target, name
        self.max_connections = max_connections
        self.active = 0
        self.loop = asyncio.new_event_loop()
        self.server = None
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"relay-{name}", daemon=True)

    def start(self) -> "Relay":
        self.thread.start()
        self.ready.wait(10)
        if self.error:
            raise self.error
        return self

    def stop(self) -> None:
        """Stops listening and ends the open connections (their tasks cancelled and
        finished inside the loop, so none is left to the interpreter's exit)."""
        async def shutdown():
            if self.server:
                self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.loop.stop()

        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
            self.thread.join(5)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        try:
            self.server = self.loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True, backlog=1024))
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        self.loop.run_forever()

    async def _handle(self, reader, writer):
        if self.active >= self.max_connections:
            writer.close()
            return
        self.active += 1
        try:
            host, port = self.target()
            try:
                sock = await self.loop.run_in_executor(self.dialer.pool, self.dialer.connect, host, port, 5.0)
            except OSError:
                writer.close()
                return
            up_reader, up_writer = await asyncio.open_connection(sock=sock)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except asyncio.CancelledError:  # the relay stops: the connection ends here, quietly
            writer.close()
        finally:
            self.active -= 1


async def _pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except (ConnectionError, OSError):
            pass
