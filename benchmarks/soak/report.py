"""The soak report as Markdown tables: windows over time, faults, and the verdict."""

from collections.abc import Sequence
from typing import Any

WINDOW_COLUMNS = (
    ("t s", "t_s"),
    ("sent", "sent"),
    ("2xx", "2xx"),
    ("stream err", "stream_error"),
    ("4xx", "4xx"),
    ("5xx", "5xx"),
    ("cut", "stream_cut"),
    ("dropped", "client_error"),
    ("timeout", "timeout"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("max ms", "max_ms"),
    ("RSS MB", "rss_mb"),
    ("fds", "fds"),
    ("non-socket fds", "non_socket_fds"),
    ("tcp", "tcp"),
    ("to upstream", "tcp_upstream"),
    ("close-wait", "close_wait"),
    ("in-flight", "in_flight"),
    ("client conns", "client_connections"),
    ("slow 408s", "slow_408"),
    ("reloads", "reloads"),
    ("limits shared", "limits_shared"),
    ("send lag p99 ms", "send_lag_p99_ms"),
    ("others' CPU %", "others_cpu_pct"),
)


def render(report: dict[str, Any]) -> str:
    return "\n\n".join(
        [windows_table(report["windows"]), faults_table(report["faults"]), verdict(report)]
    )


def windows_table(rows: Sequence[dict[str, Any]]) -> str:
    head = [title for title, _ in WINDOW_COLUMNS] + ["upstream", "redis"]
    body = [
        [_cell(row[key]) for _, key in WINDOW_COLUMNS]
        + [_state(row, "upstream_down"), _state(row, "redis_down")]
        for row in rows
    ]
    return _table(head, body)


def faults_table(faults: dict[str, dict[str, Any]]) -> str:
    head = ["fault", "sent", "expected", "as expected", "outcomes", "errors (status code)"]
    body = []
    for name, row in faults.items():
        outcomes = ", ".join(f"{k} {v}" for k, v in row["outcomes"].items())
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(row["errors"].items()))
        expected = row["expected"] or "-"
        shown = "-" if row["as_expected"] is None else str(row["as_expected"])
        body.append([name, str(row["sent"]), expected, shown, outcomes, errors])
    return _table(head, body)


def verdict(report: dict[str, Any]) -> str:
    v = report["verdict"]
    before, after = v["before_load"], v["after_load"]
    checks = v["checks"]
    answered = f"{v['requests']} sent, {v['answered']} answered"
    flat = "" if v["flat_judged"] else " (not judged: a quick run is mostly warm-up)"
    lines = [
        ("requests", f"{v['requests']} ({_outcomes(v['outcomes'])})"),
        ("sent = answered", _check(checks["sent_equals_answered"], answered)),
        ("RSS, first -> last quarter", _growth(v, "rss_first_quarter_mb", "rss_last_quarter_mb")),
        ("RSS peak", f"{v['rss_peak_mb']} MB (before load {before['rss_mb']} MB)"),
        ("fds, first -> last quarter", _fds(v)),
        ("non-TCP fds, first -> last quarter", _non_tcp(v)),
        ("non-socket fds, first -> last quarter", _not_sockets(v)),
        (
            "RSS and descriptors flat",
            _check(checks["flat"], "yes" if checks["flat"] else "no") + flat,
        ),
        ("before load -> after", _left(before, after)),
        ("in-flight after the load", _check(after["in_flight"] == 0, f"{after['in_flight']:g}")),
        ("upstream outages", _outages(report["outages"])),
        ("Redis restarts", _restarts(report["redis_outages"], v)),
        ("slow clients", _check(checks["slow_clients_timed_out"], _slow(v["slow_clients"]))),
        ("reloads", _check(checks["reloads_accepted"], _reloads(v["reloads"]))),
        ("stuck requests (timeouts)", _check(v["stuck_requests"] == 0, v["stuck_requests"])),
        ("dropped client connections", str(v["dropped_connections"])),
        ("unexpected exceptions in the gateway log", str(v["gateway_log_unexpected"])),
        ("verdict", "PASS" if v["passed"] else "FAIL"),
    ]
    return _table(["check", "measured"], [[name, str(value)] for name, value in lines])


def _growth(v: dict[str, Any], first: str, last: str) -> str:
    return f"{v[first]} -> {v[last]} MB ({v['rss_growth_mb']:+} MB, {v['rss_growth_pct']:+}%)"


def _fds(v: dict[str, Any]) -> str:
    return f"{v['fds_first_quarter']} -> {v['fds_last_quarter']} ({v['fd_growth']:+})"


def _not_sockets(v: dict[str, Any]) -> str:
    return f"{v['non_socket_fds_first_quarter']:g} -> {v['non_socket_fds_last_quarter']:g}"


def _non_tcp(v: dict[str, Any]) -> str:
    return f"{v['non_tcp_fds_first_quarter']:g} -> {v['non_tcp_fds_last_quarter']:g}"


def _left(before: dict[str, Any], after: dict[str, Any]) -> str:
    pairs = [("fds", "fds"), ("tcp", "tcp"), ("to upstream", "tcp_upstream")]
    pairs += [("close-wait", "close_wait")]
    return ", ".join(f"{title} {before[key]} -> {after[key]}" for title, key in pairs)


def _outages(outages: list[dict[str, float | None]]) -> str:
    spans = [f"down {o['down']}-{o['up']} s, first 2xx at {o['recovered']} s" for o in outages]
    return "; ".join(spans) or "none"


def _outcomes(outcomes: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in outcomes.items() if count)


def _check(ok: bool, value: object) -> str:
    return f"{value} ({'ok' if ok else 'FAIL'})"


def _state(row: dict[str, Any], key: str) -> str:
    return "down" if row[key] else "up"


def _restarts(outages: list[dict[str, float | None]], v: dict[str, Any]) -> str:
    spans = "; ".join(f"down {o['down']}-{o['up']} s" for o in outages) or "none"
    shared = v["limits_shared_after_load"]
    return f"{spans}; limits shared after the load: {shared:g} ({'ok' if shared == 1 else 'FAIL'})"


def _slow(slow: dict[str, int]) -> str:
    return (
        f"{slow['opened']} opened: {slow['408']} got 408 at their timeout, {slow['late']} late, "
        f"{slow['other']} another answer, {slow['open']} still in time at the end"
    )


def _reloads(reloads: dict[int, int]) -> str:
    return ", ".join(f"{count} answered {status}" for status, count in reloads.items()) or "none"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
