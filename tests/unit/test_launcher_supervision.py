"""`make run`'s launcher keeps the platform up: a part that exits is restarted with backoff, told
in the log and counted, and the others keep running."""

from __future__ import annotations

from itertools import count

from prometheus_client import CollectorRegistry

from services.launcher import COMPONENTS, RESTART_BACKOFF_S, STABLE_AFTER_S, Supervision

_pids = count(100)


class FakeProcess:
    def __init__(self) -> None:
        self.pid = next(_pids)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


def _supervised():
    registry = CollectorRegistry()
    spawned: list[tuple[str, FakeProcess]] = []

    def spawn(component):
        process = FakeProcess()
        spawned.append((component.name, process))
        return process

    supervision = Supervision(spawn, registry)
    for component in COMPONENTS:
        supervision.start(component, now=0.0)
    return supervision, spawned, registry


def _sample(registry: CollectorRegistry, name: str, component: str) -> float | None:
    return registry.get_sample_value(name, {"component": component})


def test_a_part_that_exits_is_restarted_after_a_second_and_the_others_keep_running(capsys):
    supervision, spawned, registry = _supervised()
    agent = next(child for child in supervision.children if child.component.name == "agent")
    first = agent.process
    first.returncode = -9  # kill -9

    supervision.tick(now=100.0)
    assert agent.process is first and _sample(registry, "infrawatch_launcher_component_up", "agent") == 0
    assert "agent exited with -9; restarting it in 1s" in capsys.readouterr().err
    supervision.tick(now=100.5)
    assert agent.process is first  # not yet
    supervision.tick(now=101.0)

    assert agent.process is not first and agent.process.poll() is None
    assert _sample(registry, "infrawatch_launcher_restarts_total", "agent") == 1
    assert _sample(registry, "infrawatch_launcher_component_up", "agent") == 1
    assert _sample(registry, "infrawatch_launcher_restarts_total", "metrics") == 0
    others = [child for child in supervision.children if child is not agent]
    assert all(child.process.poll() is None and child.restarts == 0 for child in others)
    assert len(spawned) == len(COMPONENTS) + 1


def test_a_part_that_keeps_exiting_waits_longer_each_time_and_afresh_once_it_has_run_a_while():
    supervision, _, registry = _supervised()
    metrics = next(child for child in supervision.children if child.component.name == "metrics")
    now, waits = 10.0, []
    for _ in range(len(RESTART_BACKOFF_S) + 2):
        metrics.process.returncode = 1
        supervision.tick(now)
        assert metrics.restart_at is not None
        waits.append(metrics.restart_at - now)
        now = metrics.restart_at
        supervision.tick(now)  # restarted, and exits again at once
    assert waits == [*RESTART_BACKOFF_S, RESTART_BACKOFF_S[-1], RESTART_BACKOFF_S[-1]]

    now += STABLE_AFTER_S  # ran a minute: the next exit is a first one again
    metrics.process.returncode = 1
    supervision.tick(now)
    assert metrics.restart_at - now == RESTART_BACKOFF_S[0]
    assert _sample(registry, "infrawatch_launcher_restarts_total", "metrics") == len(RESTART_BACKOFF_S) + 2
