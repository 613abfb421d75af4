"""The web console in a real browser (Playwright driving Debian's Chromium) against real processes:
agents, metrics, alerts, gateway, console and the real agent. Screenshots of every page land in
test-artifacts/console/ (the README's come from there)."""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import unavailable
from tests.e2e.conftest import ALERTS_SERVICE_NAME, GATEWAY_SERVICE, start
from tests.e2e.processes import REPO, ServiceProcess, free_port, wait_for

CHROMIUM = os.environ.get("INFRAWATCH_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = REPO / "test-artifacts" / "console"
HOST = "browser-host"
RULES = """
groups:
  - name: console
    interval: 500ms
    rules:
      - alert: ConsoleCanSeeMe
        metric: cpu_usage_percent
        aggregation: last
        window: 1m
        group_by: [host]
        op: ">="
        threshold: 0
        labels: {severity: info}
        annotations: {summary: "{{ $labels.host }} is at {{ $value }}% CPU"}
"""

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        unavailable(f"no Chromium at {CHROMIUM} (Debian package `chromium`; .ci/run installs it)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def wait_http(url: str, timeout: float = 30) -> None:
    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_for(answers, timeout, f"{url} answering")


def start_console(env: dict[str, str], log: Path) -> tuple[ServiceProcess, str]:
    process = ServiceProcess("services.console", env, log)
    url = f"http://127.0.0.1:{env['INFRAWATCH_CONSOLE_PORT']}"
    try:
        wait_http(url + "/healthz")
    except AssertionError:
        process.kill()
        raise AssertionError(f"the console never answered:\n{process.log()}") from None
    return process, url


def shot(page: object, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


@pytest.mark.parametrize("e2e_database_url", ["sqlite"], indirect=True)
def test_the_console_shows_the_fleet_live_charts_alerts_and_explore_errors_and_guards_protected_mode(
    platform_env: dict[str, str], agents_process, metrics_process, browser, tmp_path: Path
):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    env = {**platform_env, "INFRAWATCH_ALERT_RULES": str(rules)}
    processes: list[ServiceProcess] = []
    try:
        processes.append(
            start("services.alerts", env, "INFRAWATCH_ALERTS_PORT", ALERTS_SERVICE_NAME, tmp_path / "a.log")[0]
        )
        processes.append(
            start("services.gateway", env, "INFRAWATCH_GATEWAY_PORT", GATEWAY_SERVICE, tmp_path / "g.log")[0]
        )
        console, url = start_console(env, tmp_path / "console.log")
        processes.append(console)
        dead_port = free_port()
        agent_env = {
            **env,
            "INFRAWATCH_AGENT_AGENTS_ADDRESS": env["INFRAWATCH_AGENTS_ADDRESS"],
            "INFRAWATCH_AGENT_METRICS_ADDRESS": env["INFRAWATCH_METRICS_ADDRESS"],
            "INFRAWATCH_AGENT_HOSTNAME": HOST,
            "INFRAWATCH_AGENT_STATE_DIR": str(tmp_path / "agent-state"),
            "INFRAWATCH_AGENT_INTERVAL": "1s",
            # A hostile label value: shown as text, never run.
            "INFRAWATCH_AGENT_LABELS": "note=<img src=x onerror=window.pwned=1>",
            # A Prometheus target nobody serves: `up` 0 for its instance, shown on the fleet page.
            "INFRAWATCH_AGENT_SCRAPE": f"node=http://127.0.0.1:{dead_port}/metrics",
        }
        processes.append(ServiceProcess("agent", agent_env, tmp_path / "agent.log"))
        # A browser in another zone than the machine's (UTC here), so local and UTC times differ.
        page = browser.new_page(viewport={"width": 1280, "height": 900}, timezone_id="America/New_York")  # type: ignore[attr-defined]

        # Fleet: the local agent, ONLINE, in the hosts table.
        page.goto(url + "/")
        status = page.locator(f'#hosts tr[data-hostname="{HOST}"] .status')
        status.wait_for(timeout=30_000)
        sync_api.expect(status).to_have_text("ONLINE", timeout=30_000)
        sync_api.expect(page.locator(f'#hosts tr[data-hostname="{HOST}"]')).to_contain_text("<img src=x")
        assert page.evaluate("window.pwned") is None
        target = page.locator(f'#targets tr[data-instance="127.0.0.1:{dead_port}"]')
        target.wait_for(timeout=30_000)
        sync_api.expect(target).to_contain_text("DOWN")
        sync_api.expect(target).to_contain_text("node")
        shot(page, "fleet")

        # Times say their zone; the header switches to UTC (and back), remembered in the browser.
        zone = page.locator("#zone")
        sync_api.expect(zone).to_contain_text("Times: ")
        sync_api.expect(page.locator("#updated")).not_to_have_text("—", timeout=15_000)
        local_zone = "America/New_York"
        assert page.locator("#updated").inner_text().endswith(" " + local_zone)
        zone.click()
        page.wait_for_load_state()
        sync_api.expect(page.locator("#zone")).to_contain_text("Times: UTC", timeout=10_000)
        sync_api.expect(page.locator("#updated")).to_have_text(re.compile(r" UTC$"), timeout=15_000)
        page.locator("#zone").click()
        sync_api.expect(page.locator("#zone")).to_contain_text(f"Times: {local_zone}", timeout=10_000)

        # Host: the CPU chart gains a point while the test watches (live, over server-sent events).
        page.goto(f"{url}/hosts/{HOST}?range=15m")
        page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
        cpu = page.locator('figure[data-chart="cpu"]')
        before = int(cpu.get_attribute("data-points") or 0)
        page.wait_for_function(
            f"() => Number(document.querySelector('figure[data-chart=cpu]').dataset.points) > {before}",
            timeout=15_000,
        )
        # node_exporter-style charts (PromQL over the agent's node_* counters) and the process table.
        page.wait_for_function(
            "() => ['cpu-modes', 'memory-bytes', 'disk-io', 'network', 'filesystems', 'pressure', 'process-cpu']"
            ".every((k) => Number(document.querySelector(`figure[data-chart='${k}']`)?.dataset.points) > 0)",
            timeout=90_000,
            polling=2000,
        )
        sync_api.expect(page.locator("#processes tbody tr").first).to_be_visible(timeout=30_000)
        sync_api.expect(page.locator('figure[data-chart="cpu-modes"]')).to_contain_text("mode=user")
        shot(page, "host")

        # Alerts: the rule that always holds shows as firing, with its rendered summary.
        page.goto(url + "/alerts")
        firing = page.locator('#alerts tr[data-rule="ConsoleCanSeeMe"]').first
        firing.wait_for(timeout=30_000)
        sync_api.expect(firing).to_contain_text("FIRING", timeout=30_000)
        sync_api.expect(firing).to_contain_text(f"{HOST} is at")
        shot(page, "alerts")

        # Explore takes PromQL: typed into the form (metric and label names complete), `rate(...)` draws per
        # mode; an expression that does not parse shows the engine's own message.
        page.goto(url + "/explore")
        page.wait_for_function(
            "document.querySelectorAll('#metric-names option[value=\"cpu_seconds_total\"]').length === 1",
            timeout=30_000,
        )
        # Label names complete where a label goes: after `by (` and inside `{...}`.
        page.type('input[name="query"]', "sum by (cpu_mo")
        page.wait_for_function(
            "document.querySelector('#metric-names option[data-name=\"cpu_mode\"]')?.value === 'sum by (cpu_mo'"
            ".replace('cpu_mo', 'cpu_mode')",
            timeout=10_000,
        )
        page.type('input[name="query"]', "de) (rate(node_cpu_seconds_total{mo")
        page.wait_for_function(
            "document.getElementById('metric-names').dataset.kind === 'labels' && "
            "!!document.querySelector('#metric-names option[data-name=\"mode\"]')",
            timeout=10_000,
        )
        page.fill('input[name="query"]', 'sum by (host, cpu_mode) (rate(cpu_seconds_total{cpu_mode!="idle"}[1m]))')
        page.select_option('select[name="range"]', "15m")
        page.click('#query button[type="submit"]')
        page.wait_for_selector("#result tbody tr", timeout=30_000)
        sync_api.expect(page.locator("#result tbody")).to_contain_text(f"host={HOST}")
        sync_api.expect(page.locator("#result tbody")).to_contain_text("cpu_mode=user")
        assert "query=sum+by" in page.url or "query=sum%20by" in page.url  # the query is in the link
        shot(page, "explore")
        page.goto(url + "/explore?query=rate(cpu_seconds_total%5B1m%5D")
        sync_api.expect(page.locator("#error")).to_contain_text("unclosed left parenthesis", timeout=15_000)

        # Protected mode: a gateway and console that require the operator token.
        protected = {
            **env,
            "INFRAWATCH_PROTECT_READS": "true",
            "INFRAWATCH_GATEWAY_PORT": str(free_port()),
            "INFRAWATCH_CONSOLE_PORT": str(free_port()),
            # A second gateway and console beside the first: telemetry ports of their own too.
            "INFRAWATCH_GATEWAY_TELEMETRY_PORT": str(free_port()),
            "INFRAWATCH_CONSOLE_TELEMETRY_PORT": str(free_port()),
        }
        protected["INFRAWATCH_GATEWAY_ADDRESS"] = f"127.0.0.1:{protected['INFRAWATCH_GATEWAY_PORT']}"
        processes.append(
            start("services.gateway", protected, "INFRAWATCH_GATEWAY_PORT", GATEWAY_SERVICE, tmp_path / "pg.log")[0]
        )
        guarded, guarded_url = start_console(protected, tmp_path / "pconsole.log")
        processes.append(guarded)
        with urllib.request.urlopen(guarded_url + "/api/fleet", timeout=5) as _:
            pytest.fail("the protected console answered /api/fleet without a login")
    except urllib.error.HTTPError as refused:
        assert refused.code == 401
        page.goto(guarded_url + "/")
        page.wait_for_url("**/login**", timeout=10_000)
        page.fill('input[name="token"]', "not-the-token")
        page.click('button[type="submit"]')
        sync_api.expect(page.locator("#error")).to_contain_text("refused", timeout=10_000)
        cookies = page.context.cookies()
        assert not [c for c in cookies if c["name"] == "iw_session"]
        page.fill('input[name="token"]', env["INFRAWATCH_OPERATOR_TOKEN"])
        page.click('button[type="submit"]')
        page.wait_for_url(guarded_url + "/", timeout=10_000)
        page.locator(f'#hosts tr[data-hostname="{HOST}"]').wait_for(timeout=30_000)
        (session,) = [c for c in page.context.cookies() if c["name"] == "iw_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        assert env["INFRAWATCH_OPERATOR_TOKEN"] not in session["value"]

        # Silencing needs the login, and a request from the console's own script.
        forged = urllib.request.Request(
            guarded_url + "/api/silences", data=b'{"labels": {"host": "x"}}', method="POST",
            headers={"Content-Type": "application/json", "Cookie": f"iw_session={session['value']}"},
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as cross_site:
            urllib.request.urlopen(forged, timeout=5)
        assert cross_site.value.code == 403
        # The silences page: from an alert, its labels become the matchers; a duration, an author
        # and a comment; the alert then shows as silenced; the silence is listed, and expires.
        page.goto(guarded_url + "/alerts")
        row = page.locator('#alerts tr[data-rule="ConsoleCanSeeMe"]').first
        row.locator("a", has_text="Silence").click()
        page.wait_for_url("**/silences?matchers=**", timeout=10_000)
        assert 'alertname="ConsoleCanSeeMe"' in page.input_value('input[name="matchers"]')
        page.select_option('select[name="duration"]', "4h")
        page.fill('input[name="author"]', "ana")
        page.fill('input[name="comment"]', "known, being fixed")
        page.click('#silence button[type="submit"]')
        listed = page.locator('#silences tr[data-status="active"]').first
        sync_api.expect(listed).to_contain_text('alertname="ConsoleCanSeeMe"', timeout=15_000)
        sync_api.expect(listed).to_contain_text("known, being fixed")
        page.goto(guarded_url + "/alerts")
        row = page.locator('#alerts tr[data-rule="ConsoleCanSeeMe"]').first
        sync_api.expect(row).to_contain_text("SILENCED", timeout=15_000)
        page.goto(guarded_url + "/silences")
        page.locator('#silences tr[data-status="active"] button', has_text="Expire").first.click()
        sync_api.expect(page.locator('#silences tr[data-status="active"]')).to_have_count(0, timeout=15_000)
        page.check("#expired")
        expired = page.locator('#silences tr[data-status="expired"]').first
        sync_api.expect(expired).to_contain_text("ana", timeout=15_000)
        shot(page, "silences")

        # After a login, `next` leads only to this console: paths a browser reads as another host
        # (a backslash is a slash, a tab is dropped) lead home instead.
        for foreign in ("/%5Cevil.example/", "/%09/evil.example/", "https://evil.example/"):
            page.goto(f"{guarded_url}/login?next={foreign}")
            page.fill('input[name="token"]', env["INFRAWATCH_OPERATOR_TOKEN"])
            page.click('button[type="submit"]')
            page.wait_for_url(guarded_url + "/", timeout=10_000)
        page.goto(f"{guarded_url}/login?next=/alerts%3Frange%3D1h")
        page.fill('input[name="token"]', env["INFRAWATCH_OPERATOR_TOKEN"])
        page.click('button[type="submit"]')
        page.wait_for_url(guarded_url + "/alerts?range=1h", timeout=10_000)
    finally:
        for process in reversed(processes):
            process.terminate()
