"""`make mesh-traffic` (scripts/mesh-traffic.sh): labelled messages from the data set's test
split replayed through the local cluster's ingress gateway as many visitors, so that the
experiment gathers evidence and `make experiment` reaches a verdict in minutes. See
docs/mesh.md.

Each visitor is a client with a cookie jar of its own (the gateway's sticky cookie pins it
to the version it was sent to, as a browser is pinned) that sends a few messages, each as
`POST /sms/` with JSON {"sms", "guess"}: the guess is the message's true label (a share of
wrong guesses is configurable), so every version's agreement with users' guesses measures
its accuracy. Which message a request carries is drawn by popularity: texts repeat across
visitors the way campaigns and retries repeat (Zipf's law over the split in a seeded random
order, exponent --zipf; 0 draws uniformly). The order is reshuffled every 100 draws, as
campaigns come and go: over a run every message is drawn about equally often, so the mix the
models see is the held-out split's and their score distributions stay close to the model
cards' reference (PSI well under 0.1; a fixed order would make a few texts a lasting share
of the traffic, itself a drift). --mix spam-only / ham-only sends only the split's spam or
ham messages: a shifted mix, for the drift rules and PredictionDrift. Bounded by --duration
and --count, whichever comes first; --concurrency visitors at a time, at most --rate
requests a second (0: as fast as the visitors get answers).

  python -m smsdev.traffic --messages FILE [--gateway URL] [--host HOST] [--duration S] [--count N]
                                [--concurrency C] [--rate R] [--per-visitor K] [--wrong-guesses SHARE] [--zipf S] [--seed N]
                                [--mix split|spam-only|ham-only] [--cookie NAME] [--json]

Prints a summary: requests and rate, per app version (requests, visitors, answers from
the cache, agreement with the guess), status counts, and visitors that saw both versions
(0 while the sticky cookie works).
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

from smsdev.cluster import access
from smsdev.cluster.settings import Settings

LABELS = ("ham", "spam")
# The messages a mix sends: the whole split (its own spam share), or only one label.
MIXES = {"split": LABELS, "spam-only": ("spam",), "ham-only": ("ham",)}


def load_messages(path: Path) -> list[tuple[str, str]]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                if row["label"] not in LABELS:
                    raise ValueError(f"{path}: label {row['label']!r} is neither ham nor spam")
                out.append((row["sms"], row["label"]))
    if not out:
        raise ValueError(f"{path} holds no messages")
    return out


def select(messages: list[tuple[str, str]], mix: str) -> list[tuple[str, str]]:
    """The messages of `mix` (MIXES)."""
    if mix not in MIXES:
        raise ValueError(f"--mix {mix!r}: one of {', '.join(MIXES)}")
    out = [m for m in messages if m[1] in MIXES[mix]]
    if not out:
        raise ValueError(f"--mix {mix}: the messages hold none")
    return out


class Popularity:
    """Draws message indexes: Zipf's law with exponent `s` over the messages in a random
    order (rank r drawn with weight 1 / r^s), or uniformly for s = 0. The order (seeded by
    `seed`) is reshuffled every `rotate_every` draws, shared by all visitors: texts repeat
    within a rotation, and in the long run each is drawn equally often."""

    def __init__(self, n: int, s: float, seed: int, rotate_every: int = 100):
        self.order = list(range(n))
        self.shuffler = random.Random(seed)
        self.shuffler.shuffle(self.order)
        self.cumulative = list(itertools.accumulate(1.0 / (r + 1) ** s for r in range(n)))
        self.rotate_every, self.draws = rotate_every, 0
        self.lock = threading.Lock()

    def draw(self, rng: random.Random) -> int:
        x = rng.random() * self.cumulative[-1]
        rank = min(bisect.bisect_right(self.cumulative, x), len(self.order) - 1)
        with self.lock:
            self.draws += 1
            if self.rotate_every and self.draws % self.rotate_every == 0:
                self.shuffler.shuffle(self.order)
            return self.order[rank]


@dataclass
class Summary:
    requests: int = 0
    seconds: float = 0.0
    visitors: int = 0
    status: Counter = field(default_factory=Counter)
    by_version: Counter = field(default_factory=Counter)
    not_ok: Counter = field(default_factory=Counter)
    visitors_by_version: Counter = field(default_factory=Counter)
    cached: Counter = field(default_factory=Counter)
    agrees: Counter = field(default_factory=Counter)
    guesses: Counter = field(default_factory=Counter)
    wrong_guesses: int = 0
    flipped_visitors: int = 0
    failures: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"requests": self.requests, "seconds": round(self.seconds, 2), "visitors": self.visitors,
                "status": {str(k): v for k, v in sorted(self.status.items(), key=str)},
                "by_version": dict(self.by_version), "not_ok": dict(self.not_ok), "visitors_by_version": dict(self.visitors_by_version),
                "cached": dict(self.cached), "agrees": dict(self.agrees), "guesses": dict(self.guesses),
                "wrong_guesses": self.wrong_guesses, "flipped_visitors": self.flipped_visitors,
                "failures": self.failures[:5]}

    def text(self) -> str:
        rate = self.requests / self.seconds if self.seconds else 0.0
        pct = lambda a, b: f"{100 * a / b:.1f} %" if b else "-"  # noqa: E731
        lines = [f"mesh-traffic: {self.requests:,} requests in {self.seconds:.1f} s ({rate:,.0f}/s) from "
                 f"{self.visitors:,} visitors; {self.wrong_guesses:,} wrong guesses on purpose"]
        for v in sorted(self.by_version):
            n = self.by_version[v]
            lines.append(f"  app {v}: {n:,} requests ({pct(n, self.requests)}) from {self.visitors_by_version[v]:,} "
                         f"visitors, {self.not_ok[v]:,} not answered 200; answered from the cache "
                         f"{pct(self.cached[v], n)}; agrees with the guess {pct(self.agrees[v], self.guesses[v])}")
        lines.append("  statuses: " + ", ".join(f"{k}: {v:,}" for k, v in sorted(self.status.items(), key=str)))
        lines.append(f"  visitors that saw both versions: {self.flipped_visitors}")
        if self.failures:
            lines.append(f"  first failures: {'; '.join(self.failures[:3])}")
        return "\n".join(lines)


def run(gateway: str, host: str, messages: list[tuple[str, str]], *, duration: float = 60, count: int = 2000,
        concurrency: int = 8, rate: float = 0.0, per_visitor: int = 10, wrong_guesses: float = 0.0, zipf: float = 1.0,
        seed: int = 1, timeout: float = 10, cookie: str = "sms-app-version", mix: str = "split") -> Summary:
    """Sends the traffic and returns what came back. Stops after `duration` seconds or
    `count` requests (0: no count bound), whichever comes first; at most `rate` a second.
    `mix`: which of the messages are sent (MIXES)."""
    if duration <= 0 and count <= 0:
        raise ValueError("give a duration or a count: the traffic must stop by itself")
    if not 0.0 <= wrong_guesses <= 1.0:
        raise ValueError("--wrong-guesses is a share between 0 and 1")
    messages = select(messages, mix)
    popularity = Popularity(len(messages), zipf, seed)
    deadline = time.monotonic() + (duration if duration > 0 else float("inf"))
    lock = threading.Lock()
    sent = [0]
    out = Summary()
    url = gateway.rstrip("/") + "/sms/"
    t0 = time.monotonic()

    def take() -> bool:
        with lock:
            if (count > 0 and sent[0] >= count) or time.monotonic() >= deadline:
                return False
            due = t0 + sent[0] / rate if rate > 0 else 0.0
            sent[0] += 1
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            return time.monotonic() < deadline
        return True

    def worker(t: int) -> None:
        rng = random.Random(seed * 1_000_003 + t)
        while True:
            session = requests.Session()  # a new visitor: an empty cookie jar
            seen = set()
            sent_any = False
            for _ in range(per_visitor):
                if not take():
                    break
                sent_any = True
                text, label = messages[popularity.draw(rng)]
                wrong = rng.random() < wrong_guesses
                guess = LABELS[1 - LABELS.index(label)] if wrong else label
                version, cached, agrees = None, False, None
                try:
                    r = session.post(url, json={"sms": text, "guess": guess}, headers={"Host": host}, timeout=timeout)
                    status = r.status_code
                    if status == 200:
                        body = r.json()
                        version, cached, agrees = body.get("app_version"), bool(body.get("cached")), body.get("agrees")
                    else:
                        # which version failed: the sticky cookie Envoy set (none when it is off)
                        version = next((c.value for c in session.cookies if c.name == cookie), "unknown")
                except (requests.RequestException, ValueError) as e:
                    status = "failed"
                    with lock:
                        if len(out.failures) < 20:
                            out.failures.append(repr(e))
                with lock:
                    out.requests += 1
                    out.status[status] += 1
                    out.wrong_guesses += wrong
                    if version:
                        out.by_version[version] += 1
                        out.not_ok[version] += status != 200
                        out.cached[version] += cached
                        if agrees is not None:
                            out.guesses[version] += 1
                            out.agrees[version] += bool(agrees)
                        seen.add(version)
            session.close()
            with lock:
                if sent_any:
                    out.visitors += 1
                    for v in seen:
                        out.visitors_by_version[v] += 1
                    out.flipped_visitors += len(seen) > 1
            if not sent_any:
                return

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    out.seconds = time.monotonic() - t0
    return out


def running_gateway(state: Path) -> tuple[str, str] | None:
    """(URL, Host header) of the running `make mesh` / `make cluster`'s ingress gateway,
    from its access file."""
    found = access.read(state) or {}
    return (found["gateway"], found.get("host", access.HOST)) if "gateway" in found else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make mesh-traffic", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=Path, required=True, help="JSON lines {sms, label} (the test split)")
    p.add_argument("--gateway", help="gateway URL (default: the running make mesh's, from CLUSTER_DIR/access.json)")
    p.add_argument("--host", help=f"Host header (default: the running cluster's, {access.HOST})")
    p.add_argument("--duration", type=float, default=60, help="stop after this many seconds (default 60; 0: no limit)")
    p.add_argument("--count", type=int, default=20000, help="stop after this many requests (default 20000; 0: no limit)")
    p.add_argument("--concurrency", type=int, default=8, help="visitors at a time (default 8)")
    p.add_argument("--rate", type=float, default=0, help="at most this many requests a second (default 0: no limit)")
    p.add_argument("--per-visitor", type=int, default=10, help="messages each visitor sends (default 10)")
    p.add_argument("--wrong-guesses", type=float, default=0.0, help="share of guesses that are wrong (default 0)")
    p.add_argument("--zipf", type=float, default=1.0, help="popularity exponent of the messages (default 1; 0 uniform)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--mix", choices=list(MIXES), default="split",
                   help="split: every message of the split (its mix, what the model cards' drift reference measured); "
                        "spam-only / ham-only: a shifted mix that drives the drift rules' PSI far above 0.2")
    p.add_argument("--cookie", default="sms-app-version", help="the sticky cookie's name (istio.canary.stickyCookie.name)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    a = p.parse_args(argv)
    if a.concurrency < 1 or a.per_visitor < 1:
        p.error("--concurrency and --per-visitor must be at least 1")
    gateway, host = a.gateway, a.host
    if not gateway:
        found = running_gateway(Settings().state)
        if not found:
            print("error: no running mesh found (start it with `make mesh`, or give --gateway)", file=sys.stderr)
            return 1
        gateway, host = found[0], host or found[1]
    host = host or access.HOST
    try:
        messages = load_messages(a.messages)
        print(f"==> {len(select(messages, a.mix))} labelled messages ({a.mix}), {a.concurrency} visitors at a time, {a.per_visitor} messages "
              f"each, to {gateway} (Host {host}){f' at most {a.rate:g}/s' if a.rate else ''}; until {a.count or 'any number of'} requests or "
              f"{a.duration or 'no limit of'} s", file=sys.stderr, flush=True)
        summary = run(gateway, host, messages, duration=a.duration, count=a.count, concurrency=a.concurrency, rate=a.rate,
                      per_visitor=a.per_visitor, wrong_guesses=a.wrong_guesses, zipf=a.zipf, seed=a.seed,
                      cookie=a.cookie, mix=a.mix)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary.as_dict(), indent=2) if a.json else summary.text())
    # A run in which nothing was answered is a failure (the mesh down, a wrong address).
    return 0 if summary.status.get(200) else 1


if __name__ == "__main__":
    sys.exit(main())
