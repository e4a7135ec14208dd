"""The chart's routing on a real Envoy in front of real services (issue 6's acceptance):
every request goes 127.0.0.1 client -> Envoy gateway listener -> app v1|v2 -> Envoy mesh
listener -> model v1 (+ the mirror to the v2 shadow). Traffic is bounded; figures are
printed (pytest -s, or the report in test-output/mesh/figures.txt)."""

from __future__ import annotations

import time
from collections import Counter

import requests

from harness import COOKIE, HOST, MODEL, OUT, metric, poll

DEFAULTS = ()
SPLIT_80_20 = ("istio.canary.weights.stable=80,istio.canary.weights.canary=20",)
ROLLBACK = ("istio.canary.weights.stable=100,istio.canary.weights.canary=0",)
CANARY_OFF = ("istio.canary.enabled=false",)
SHADOW_25 = ("modelService.shadow.enabled=true,modelService.shadow.mirror.percent=25",)


def report(line: str) -> None:
    print(line)
    with open(OUT / "figures.txt", "a") as f:
        f.write(line + "\n")


def version_of(r: requests.Response) -> str:
    assert r.status_code == 200, f"{r.status_code} {r.text[:200]}"
    return r.json()["app_version"]


def set_cookie(r: requests.Response) -> str | None:
    """The sticky cookie `NAME=VALUE` Envoy set on this response, if any."""
    v = r.headers.get("set-cookie")
    return v.split(";")[0] if v else None


def new_visitors(client, n: int) -> Counter:
    """n requests without a cookie: returns the versions that answered. Each answer must
    carry the cookie naming the version that answered."""
    rs = client.map(lambda i: client.post(i), range(n))
    seen = Counter()
    for r in rs:
        v = version_of(r)
        assert set_cookie(r) == f"{COOKIE}={v}", (set_cookie(r), v)
        seen[v] += 1
    return seen


def test_weighted_split_with_default_values(mesh, client):
    mesh(*DEFAULTS)
    seen = new_visitors(client, 2000)
    share = 100 * seen["v2"] / 2000
    report(f"split defaults (90/10): 2000 new visitors -> v2 {share:.1f} % ({dict(seen)})")
    assert set(seen) <= {"v1", "v2"}
    assert 8.0 <= share <= 12.0


def test_browser_host_reaches_the_app_through_the_local_virtual_host(mesh):
    st = mesh(*DEFAULTS)
    s = requests.Session()  # a browser: Host 127.0.0.1:PORT, keeps the cookie it gets
    first = s.post(f"{st.gateway}/sms/", json={"sms": "hello there"}, timeout=10)
    v = version_of(first)
    assert s.cookies.get(COOKIE) == v
    assert all(version_of(s.post(f"{st.gateway}/sms/", json={"sms": "again"}, timeout=10)) == v for _ in range(10))
    assert s.get(f"{st.gateway}/sms/", timeout=10).status_code == 200  # the UI


def test_sticky_cookie_keeps_every_visitor_on_its_version(mesh, client):
    mesh(*DEFAULTS)
    visitors, further = 200, 20

    def visit(i: int) -> tuple[str, int]:
        first = client.post(i)
        v, cookie = version_of(first), set_cookie(first)
        assert cookie == f"{COOKIE}={v}"
        flips = 0
        for k in range(further):
            # a browser also sends its other cookies: the version one need not be first
            r = client.post(i * 100 + k, headers={"Cookie": f"theme=dark; {cookie}; lang=en"})
            flips += version_of(r) != v
            assert set_cookie(r) is None, "a returning visitor must not be re-assigned"
        return v, flips

    results = client.map(visit, range(visitors))
    flips = sum(f for _, f in results)
    per_version = Counter(v for v, _ in results)
    report(f"stickiness: {visitors} visitors x {further} further requests -> {flips} flips ({dict(per_version)})")
    assert flips == 0
    assert per_version["v2"] >= 5 and per_version["v1"] >= 100, per_version  # both versions were exercised


def test_forced_version_by_header_and_host(mesh, client):
    mesh(*DEFAULTS)
    cases = {
        "x-version: v2": dict(headers={"x-version": "v2"}),
        "x-version: v2 beats a v1 cookie": dict(headers={"x-version": "v2", "Cookie": f"{COOKIE}=v1"}),
        "canary. host": dict(host=f"canary.{HOST}"),
        "canary. host with port": dict(host=f"canary.{HOST}:8000"),
        "canary. host beats a v1 cookie": dict(host=f"canary.{HOST}", headers={"Cookie": f"{COOKIE}=v1"}),
    }
    for what, kw in cases.items():
        seen = Counter(version_of(r) for r in client.map(lambda i: client.post(i, **kw), range(50)))
        assert seen == {"v2": 50}, f"{what}: {seen}"
    for what, kw in {"x-version: v1": dict(headers={"x-version": "v1", "Cookie": f"{COOKIE}=v2"}),
                     "stable. host": dict(host=f"stable.{HOST}", headers={"Cookie": f"{COOKIE}=v2"})}.items():
        seen = Counter(version_of(r) for r in client.map(lambda i: client.post(i, **kw), range(50)))
        assert seen == {"v1": 50}, f"{what}: {seen}"
    report("forced version: x-version v2 and the canary. host -> v2 for 250/250; x-version v1 and stable. -> v1 100/100")


def test_weighted_split_after_rerendering_80_20(mesh, client):
    mesh(*SPLIT_80_20)
    n = 4000  # at 20 % the share's standard deviation is 0.9 points over 2,000 visitors: +- 2 needs more
    seen = new_visitors(client, n)
    share = 100 * seen["v2"] / n
    report(f"split 80/20 (--set): {n} new visitors -> v2 {share:.1f} % ({dict(seen)})")
    assert 18.0 <= share <= 22.0


def test_rollback_sends_nobody_to_v2_whatever_the_cookie(mesh, client):
    for sets in (ROLLBACK, CANARY_OFF):
        mesh(*sets)
        kinds = {
            "new": {},
            "v2 cookie": dict(headers={"Cookie": f"{COOKIE}=v2"}),
            "x-version v2": dict(headers={"x-version": "v2"}),
            "canary. host": dict(host=f"canary.{HOST}"),
        }
        total = Counter()
        for what, kw in kinds.items():
            rs = client.map(lambda i: client.post(i, **kw), range(100))
            seen = Counter(version_of(r) for r in rs)
            assert seen == {"v1": 100}, f"{sets} {what}: {seen}"
            if what in ("new", "v2 cookie"):  # the v2 cookie is overwritten with v1
                assert {set_cookie(r) for r in rs} == {f"{COOKIE}=v1"}
            total += seen
        report(f"rollback {sets[0]}: 400 requests (new, v2 cookie, x-version v2, canary. host) -> {dict(total)}")


def shadow_count(stack) -> float:
    return metric(stack.model_metrics("v2"), "sms_model_predictions_total", source="shadow")


def serving_count(stack) -> float:
    return metric(stack.model_metrics("v1"), "sms_model_predictions_total", source="app")


def settled(read, what: str) -> float:
    """The counter once it has stopped moving (mirrored calls finish after the answers)."""
    last = [read(), time.monotonic()]

    def stable():
        now = read()
        if now != last[0]:
            last[:] = [now, time.monotonic()]
            return False
        return time.monotonic() - last[1] > 0.5

    poll(stable, 20, f"{what} to settle")
    return last[0]


def test_shadow_gets_its_share_users_get_v1_and_its_loss_is_invisible(mesh, client):
    st = mesh(*SHADOW_25)
    v1_kw = dict(headers={"Cookie": f"{COOKIE}=v1"})  # app v1: cache off, one gRPC call per request
    shadow0, serving0 = settled(lambda: shadow_count(st), "shadow"), serving_count(st)
    n = 1000
    rs = client.map(lambda i: client.post(i, **v1_kw), range(n))
    models = Counter(r.json()["model_version"] if r.status_code == 200 else r.status_code for r in rs)
    assert models == {"v1": n}, models
    assert Counter(version_of(r) for r in rs) == {"v1": n}
    served = serving_count(st) - serving0
    mirrored = settled(lambda: shadow_count(st), "shadow") - shadow0
    share = 100 * mirrored / served
    report(f"shadow 25 %: {n} user requests -> {served:.0f} gRPC calls to model v1, "
           f"{mirrored:.0f} mirrored to the shadow ({share:.1f} %); user answers from model {dict(models)}")
    assert served == n, "app v1 has its cache off: each user request is one gRPC call"
    assert 20.0 <= share <= 30.0

    # The shadow goes away: the mirror fails, the users see nothing of it.
    shadow = st.procs["model-v2"]
    try:
        shadow.stop()
        assert not shadow.alive()
        rs = client.map(lambda i: client.post(i, **v1_kw), range(500))
        errors = sum(r.status_code != 200 for r in rs)
        models = Counter(r.json()["model_version"] for r in rs if r.status_code == 200)
        admin = f"http://127.0.0.1:{st.ports['admin']}/stats?filter=outbound.8081.v2.*upstream_cx_connect_fail"
        stats = requests.get(admin, timeout=5).text.strip()
        report(f"shadow stopped: 500 user requests -> {errors} errors, answers from model {dict(models)}; "
               f"envoy: {stats}")
        assert errors == 0
        assert models == {"v1": 500}
        assert stats and int(stats.rsplit(":", 1)[1]) > 0, f"the mirror was never attempted: {stats!r}"
    finally:
        st.start_model("v2", "shadow")
        st.wait_model("v2")
    # and it is back in the mirror
    before = settled(lambda: shadow_count(st), "shadow")
    client.map(lambda i: client.post(i, **v1_kw), range(200))
    assert poll(lambda: shadow_count(st) > before, 20, "mirrored calls to the restarted shadow")
    assert MODEL  # (names the model Service whose subsets these are)
