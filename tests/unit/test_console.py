"""The console's own rules: chart steps, sessions, the cross-site guard."""

from __future__ import annotations

from services.console.app import MAX_POINTS, RANGES_S, _same_origin, step_for
from services.console.sessions import Sessions


def test_no_chart_holds_more_than_2000_points_per_series():
    for range_s in RANGES_S.values():
        assert range_s // step_for(range_s) <= MAX_POINTS
    assert step_for(900) == 10 and step_for(86400) == 44 and step_for(604800) == 303


def test_a_session_holds_the_token_on_the_server_until_it_expires_or_closes():
    now = [0.0]
    sessions = Sessions(ttl_s=60, clock=lambda: now[0])
    session = sessions.open("operator-secret")
    assert "operator-secret" not in session and sessions.token(session) == "operator-secret"
    assert sessions.token("forged") == "" and sessions.token(None) == ""
    now[0] = 61
    assert sessions.token(session) == ""
    other = sessions.open("operator-secret")
    sessions.close(other)
    assert sessions.token(other) == ""


class _Request:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


def test_state_changes_need_the_consoles_header_and_a_same_origin_fetch():
    assert _same_origin(_Request({"x-infrawatch-console": "1", "sec-fetch-site": "same-origin"}))  # type: ignore[arg-type]
    assert not _same_origin(_Request({"sec-fetch-site": "same-origin"}))  # type: ignore[arg-type]
    assert not _same_origin(_Request({"x-infrawatch-console": "1", "sec-fetch-site": "cross-site"}))  # type: ignore[arg-type]


def test_a_cross_site_logout_is_refused_and_changes_nothing_while_the_consoles_own_ends_the_session():
    import asyncio
    from types import SimpleNamespace

    from services.console.app import COOKIE, logout

    sessions = Sessions(ttl_s=60)
    session = sessions.open("operator-secret")
    console = SimpleNamespace(sessions=sessions)

    def request(headers: dict[str, str]) -> SimpleNamespace:
        return SimpleNamespace(headers=headers, cookies={COOKIE: session})

    forged = asyncio.run(logout(console, request({"sec-fetch-site": "cross-site"})))  # type: ignore[arg-type]
    assert forged.status_code == 403 and "set-cookie" not in forged.headers
    assert sessions.token(session) == "operator-secret"
    own = asyncio.run(logout(console, request({"x-infrawatch-console": "1", "sec-fetch-site": "same-origin"})))  # type: ignore[arg-type]
    assert own.status_code == 303 and COOKIE in own.headers["set-cookie"]
    assert sessions.token(session) == ""


def test_invented_http_methods_share_one_telemetry_label():
    from services.console.telemetry import method_label

    assert [method_label(m) for m in ("GET", "POST", "BREW", "X" * 100)] == ["GET", "POST", "other", "other"]


def test_every_host_page_query_is_promql_the_engine_parses_and_names_only_this_host():
    from services.console.app import PROCESS_COLUMNS, PROM_CHARTS, PromChart
    from services.metrics.query.promql.parser import parse

    tricky = 'db"1\\'
    for chart in (*PROM_CHARTS, PromChart("processes", "", "", PROCESS_COLUMNS)):
        for _, query in chart.expressions(tricky, 303):
            parse(query)  # raises on anything the engine would refuse
            assert 'host="db\\"1\\\\"' in query, query
            assert "[606s]" in query or "[" not in query or "[1m]" in query, query
