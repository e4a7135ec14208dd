"""What the bench prints as it goes: a header per section, a line per measured load, the
shadow runs, the overload's outcome, and at the end the targets, met or not."""

from __future__ import annotations

ROW_HEADER = f"  {'':<52} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'RSS MiB':>8} {'others':>7}"
SHADOW_HEADER = (f"  {'run':<17} {'serving/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'shadow/s':>9} {'p50 ms':>7} "
                 f"{'p99 ms':>7} {'compared':>9} {'others':>7}")


def section(title: str):
    print(f"\n== {title}", flush=True)


def row_line(row: dict) -> str:
    return (f"  {row['name']:<52} {row['rps']:>9,.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
            f"{row['rss_mib']:>8.1f} {row['other_cores']:>7.2f}")


def shadow_line(i: int, run: dict) -> str:
    return (f"  {i}. comparison {run['mode']:<4} {run['serving_rps']:>9,.0f} {run['serving_p50_ms']:>7.2f} "
            f"{run['serving_p99_ms']:>7.2f} {run['shadow_rps']:>9,.0f} {run['shadow_p50_ms']:>7.2f} "
            f"{run['shadow_p99_ms']:>7.2f} {run['compared']:>9} {run['other_cores']:>7.2f}")


def overload_lines(who: str, o: dict, answers: str) -> list[str]:
    """The flood's answers, a new caller's meanwhile, the memory and the health after."""
    n = o["new_caller"]
    return [
        f"  {who}: {o['answers']:,} answers ({o['answers_per_s']:,.0f}/s) {o[answers]}"
        + (f", socket errors {o['socket_errors']}" if "socket_errors" in o else "")
        + (f", connection attempts the kernel dropped (listen queue full) {o['listen_queue_overflows']:,}"
           if "listen_queue_overflows" in o else "")
        + (f", streams refused over the {o['streams_per_connection']} a connection carries "
           f"{o['refused_streams']:,}" if "refused_streams" in o else "")
        + (f", connections closed over MAX_CONNECTIONS {o['refused_connections']:,}"
           if "refused_connections" in o else "")
        + f"; latency p50 {o['p50_ms']:.1f} ms p99 {o['p99_ms']:.1f} ms max {o['max_ms']:.1f} ms",
        f"  {who}: a new caller every 50 ms meanwhile: {n['calls']} calls {n['outcomes']}; "
        f"p50 {n['p50_ms']:.1f} ms p99 {n['p99_ms']:.1f} ms max {n['max_ms']:.1f} ms",
        f"  {who}: RSS idle {o['idle_rss_mib']:.1f} MiB, peak {o['peak_rss_mib']:.1f} MiB (VmHWM "
        f"{o['vmhwm_mib']:.1f}, chart limit {o['limit_mib']} MiB), {o['rss_after_mib']:.1f} MiB "
        f"{o['settle_s']:.1f} s after; healthy after: {o['healthy_after']}",
    ]


def shown(value) -> str:
    """A figure as the targets table shows it."""
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def informational(target: dict) -> bool:
    return target["target"].startswith("(information")


def print_targets(ts: list[dict]):
    print("\n== targets (missed ones are reported, not failed on)")
    for t in ts:
        mark = "" if informational(t) else "met" if t["met"] else "NOT met"
        print(f"  {t['part']:<9} {t['what']:<66} {shown(t['value']):>10}  {t['target']:<40} {mark}")
