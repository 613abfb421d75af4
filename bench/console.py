"""`make bench-console`: the web console with a fleet of AGENTS simulated hosts, in Debian's Chromium.

Agents and metrics run as processes (bench/platform.py), plus a gateway and the console. Every
simulated host registers with its own token and sends its key metrics; one host also holds 24 h
of CPU, memory, load, filesystem and network samples at 10 s. Measured:
1. the fleet page's first complete render (navigation until the page marks itself loaded), p50/p99;
2. a host's 24 h chart data (`/api/hosts/<h>/series?range=24h`), p50/p99;
3. a live point: from ingesting a CPU sample to the open host page's chart holding it, p50/p99;
4. the gateway's GetFleetOverview when every value is minutes old and again right after every host
   sent a round (a live fleet), and ListAgents pages of 100 and 1,000; where the fleet page's
   time goes in the browser (asking /api/fleet, its answer, drawing the rows).
Prints one JSON object (also written to bench-console.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc

from bench.platform import ENROLL, add_platform_options, percentile, report, running_platform
from infrawatch.agents.v1 import agents_pb2, agents_pb2_grpc
from infrawatch.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from infrawatch.metrics.v1 import metrics_pb2 as pb
from infrawatch.metrics.v1 import metrics_pb2_grpc
from services.processes import ServiceProcess, free_port, wait_serving

CHROMIUM = os.environ.get("INFRAWATCH_TEST_CHROMIUM", "/usr/bin/chromium")
DAY_SAMPLES = 8640
PHASES = """() => {
  const asked = performance.getEntriesByType("resource").find((e) => e.name.endsWith("/api/fleet"));
  return [asked.startTime, asked.responseEnd, Number(document.body.dataset.loadedAt)];
}"""


def log(message: str) -> None:
    print(f"bench-console: {message}", file=sys.stderr, flush=True)


def label(name: str, value: str) -> pb.Label:
    return pb.Label(name=name, value=value)


def host_batch(number: int, now_ms: int, day: bool) -> pb.MetricBatch:
    """Key metrics of one host: one recent sample each, or 24 h of them every 10 s."""
    count = DAY_SAMPLES if day else 1
    start = now_ms - (count - 1) * 10_000
    batch = pb.MetricBatch(sequence=1)
    gauges = {
        "cpu_usage_percent": 20 + number % 60,
        "memory_used_percent": 40.0,
        "load1": 0.5,
        "memory_used_bytes": 2e9,
    }
    for name, level in gauges.items():
        values = [level + (i % 37) / 10 for i in range(count)]
        batch.series.add(labels=[label("__name__", name)], start_ms=start, interval_ms=10_000, values=values)
    batch.series.add(
        labels=[label("__name__", "fs_used_percent"), label("mountpoint", "/")],
        start_ms=start,
        interval_ms=10_000,
        values=[55.0] * count,
    )
    batch.series.add(
        labels=[label("__name__", "net_rx_bytes_total"), label("interface", "eth0")],
        start_ms=start,
        interval_ms=10_000,
        values=[float(i * 125_000) for i in range(count)],
    )
    return batch


async def send_round(metrics_address: str, tokens: dict[str, str], with_day: bool = False) -> None:
    """One round of every host's key metrics, as a live fleet sends every 10 s (with 24 h for
    host-0000 when `with_day`)."""
    now_ms = int(time.time() * 1000)
    async with grpc.aio.insecure_channel(metrics_address) as channel:
        stub = metrics_pb2_grpc.MetricsServiceStub(channel)

        async def send(number: int, hostname: str) -> None:
            batch = host_batch(number, now_ms, day=with_day and number == 0)
            call = stub.StreamMetrics(iter([batch]), metadata=(("authorization", f"Bearer {tokens[hostname]}"),))
            async for ack in call:
                assert ack.samples_rejected == 0, ack

        hostnames = list(tokens)
        for first in range(0, len(hostnames), 50):
            await asyncio.gather(*(send(first + i, h) for i, h in enumerate(hostnames[first : first + 50])))


async def populate(agents_address: str, metrics_address: str, hosts: int) -> dict[str, str]:
    tokens: dict[str, str] = {}
    async with grpc.aio.insecure_channel(agents_address) as channel:
        stub = agents_pb2_grpc.AgentServiceStub(channel)
        for number in range(hosts):
            hostname = f"host-{number:04d}"
            reply = await stub.RegisterAgent(
                agents_pb2.RegisterAgentRequest(hostname=hostname, labels={"rack": f"r{number % 20}"}),
                metadata=ENROLL,
                timeout=10,
            )
            tokens[hostname] = reply.agent_token
    await send_round(metrics_address, tokens, with_day=True)
    return tokens


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    add_platform_options(parser, "bench-console.json")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    env = {"INFRAWATCH_MAINTENANCE_EVERY": "1h", "INFRAWATCH_HEARTBEAT_INTERVAL": "1h"}
    with running_platform(args.backend, args.postgres_url, env) as platform:
        gateway_port, console_port = free_port(), free_port()
        extra = {
            **platform.env,
            "INFRAWATCH_METRICS_ADDRESS": platform.metrics_address,
            "INFRAWATCH_GATEWAY_PORT": str(gateway_port),
            "INFRAWATCH_GATEWAY_ADDRESS": f"127.0.0.1:{gateway_port}",
            "INFRAWATCH_ALERTS_ADDRESS": "",
            "INFRAWATCH_CONSOLE_PORT": str(console_port),
        }
        gateway = ServiceProcess("services.gateway", extra, platform.workdir / "gateway.log")
        console = ServiceProcess("services.console", extra, platform.workdir / "console.log")
        try:
            wait_serving(f"127.0.0.1:{gateway_port}", "infrawatch.gateway.v1.OperatorService")
            tokens = asyncio.run(populate(platform.agents_address, platform.metrics_address, args.agents))
            log(f"{len(tokens)} hosts registered with their key metrics; host-0000 holds 24 h")
            url = f"http://127.0.0.1:{console_port}"
            renders, day_fetches, live = [], [], []
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                phases = []  # in the browser: when /api/fleet was asked, answered, and the page was complete
                for _ in range(args.rounds + 1):
                    started = time.perf_counter()
                    page.goto(url + "/")
                    page.wait_for_selector("body[data-loaded=true]", timeout=60_000)
                    renders.append(time.perf_counter() - started)
                    phases.append(page.evaluate(PHASES))
                rows = page.locator("#hosts tbody tr").count()
                fleet_api = []
                for _ in range(args.rounds + 1):
                    started = time.perf_counter()
                    with urllib.request.urlopen(url + "/api/fleet", timeout=60) as reply:
                        reply.read()
                    fleet_api.append(time.perf_counter() - started)
                operator = gateway_pb2_grpc.OperatorServiceStub(grpc.insecure_channel(f"127.0.0.1:{gateway_port}"))

                def timed(call: Callable[[], object]) -> list[float]:
                    took = []
                    for _ in range(args.rounds + 1):
                        started = time.perf_counter()
                        call()
                        took.append(time.perf_counter() - started)
                    return took

                def overview() -> object:
                    return operator.GetFleetOverview(gateway_pb2.GetFleetOverviewRequest(top_n=10), timeout=60)

                # Every host's values are minutes old by now (as after an outage of the fleet)...
                overview_rpc = timed(overview)
                list_rpc = timed(lambda: operator.ListAgents(gateway_pb2.ListAgentsRequest(page_size=1000), timeout=60))
                page_rpc = timed(lambda: operator.ListAgents(gateway_pb2.ListAgentsRequest(page_size=100), timeout=60))
                # ...and then fresh, as in a fleet whose agents send every 10 s.
                # (on a thread of its own: Playwright's sync API keeps an event loop on this one)
                with ThreadPoolExecutor(1) as aside:
                    aside.submit(asyncio.run, send_round(platform.metrics_address, tokens)).result()
                live_overview_rpc = timed(overview)
                for _ in range(args.rounds + 1):
                    started = time.perf_counter()
                    with urllib.request.urlopen(url + "/api/hosts/host-0000/series?range=24h", timeout=60) as reply:
                        body = json.loads(reply.read())
                    day_fetches.append(time.perf_counter() - started)
                points = max(len(s["t"]) for chart in body["charts"] for s in chart["series"])
                page.goto(url + "/hosts/host-0001?range=15m")
                page.wait_for_selector("body[data-loaded=true]", timeout=60_000)
                metrics = metrics_pb2_grpc.MetricsServiceStub(grpc.insecure_channel(platform.metrics_address))
                time.sleep(1.0)  # the live stream is open
                for number in range(args.rounds):
                    before = int(page.get_attribute('figure[data-chart="cpu"]', "data-points") or 0)
                    batch = pb.MetricBatch(sequence=number + 2)
                    batch.series.add(
                        labels=[label("__name__", "cpu_usage_percent")],
                        timestamps_ms=[int(time.time() * 1000)],
                        values=[50.0 + number],
                    )
                    started = time.perf_counter()
                    (_ack,) = metrics.StreamMetrics(
                        iter([batch]), metadata=(("authorization", f"Bearer {tokens['host-0001']}"),), timeout=10
                    )
                    page.wait_for_function(
                        f"() => Number(document.querySelector('figure[data-chart=cpu]').dataset.points) > {before}",
                        timeout=10_000,
                        polling=10,
                    )
                    live.append(time.perf_counter() - started)
                    time.sleep(0.3)
                browser.close()
        finally:
            console.terminate()
            gateway.terminate()
    renders, day_fetches = renders[1:], day_fetches[1:]  # the first of each warms caches
    result = {
        "backend": args.backend,
        "hosts": args.agents,
        "fleet_rows_rendered": rows,
        "fleet_render_p50_ms": round(percentile(renders, 0.5) * 1000),
        "fleet_render_p99_ms": round(percentile(renders, 0.99) * 1000),
        "fleet_api_p50_ms": round(percentile(fleet_api[1:], 0.5) * 1000),
        "gateway_fleet_overview_p50_ms": round(percentile(overview_rpc[1:], 0.5) * 1000),
        "gateway_fleet_overview_live_fleet_p50_ms": round(percentile(live_overview_rpc[1:], 0.5) * 1000),
        "gateway_fleet_overview_live_fleet_p99_ms": round(percentile(live_overview_rpc[1:], 0.99) * 1000),
        "gateway_list_agents_100_p50_ms": round(percentile(page_rpc[1:], 0.5) * 1000),
        "gateway_list_agents_1000_p50_ms": round(percentile(list_rpc[1:], 0.5) * 1000),
        "fleet_page_asks_api_at_p50_ms": round(percentile([p[0] for p in phases[1:]], 0.5)),
        "fleet_api_in_browser_p50_ms": round(percentile([p[1] - p[0] for p in phases[1:]], 0.5)),
        "fleet_rows_drawn_after_answer_p50_ms": round(percentile([p[2] - p[1] for p in phases[1:]], 0.5)),
        "host_24h_chart_data_p50_ms": round(percentile(day_fetches, 0.5) * 1000),
        "host_24h_chart_data_p99_ms": round(percentile(day_fetches, 0.99) * 1000),
        "host_24h_points_per_series": points,
        "live_point_p50_ms": round(percentile(live, 0.5) * 1000),
        "live_point_p99_ms": round(percentile(live, 0.99) * 1000),
    }
    report(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
