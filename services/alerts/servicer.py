"""gRPC edge of the alerts context (asyncio): proto in, one use case on the blocking pool, proto out.
WatchAlerts is a coroutine: a watcher waiting for changes holds no thread."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from google.protobuf.duration_pb2 import Duration

from infrawatch.alerts.v1 import alerts_pb2 as pb
from infrawatch.alerts.v1 import alerts_pb2_grpc
from services.alerts import service
from services.alerts.dispatch import silenced_by
from services.alerts.domain import Alert, Silence, State
from services.alerts.service import AlertsContext
from services.common.errors import InvalidArgument, ResourceExhausted
from services.common.metadata import bearer_token
from services.common.selectors import Matcher, MatchType, label_set_matches
from services.common.timestamps import to_epoch_ms, to_timestamp

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AlertService"].full_name
T = TypeVar("T")

_STATE_TO_PROTO = {
    State.PENDING: pb.ALERT_STATE_PENDING,
    State.FIRING: pb.ALERT_STATE_FIRING,
    State.RESOLVED: pb.ALERT_STATE_RESOLVED,
}
_STATE_FROM_PROTO = {value: key for key, value in _STATE_TO_PROTO.items()}


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromMilliseconds(int(seconds * 1000))
    return duration


def alert_to_proto(alert: Alert, silenced: list[str]) -> pb.Alert:
    message = pb.Alert(
        fingerprint=alert.fingerprint,
        rule=alert.rule,
        state=_STATE_TO_PROTO[alert.state],
        labels=alert.labels,
        annotations=alert.annotations,
        value=alert.value,
        active_since=to_timestamp(alert.active_since_ms),
        silenced_by=silenced,
    )
    if alert.fired_at_ms is not None:
        message.fired_at.CopyFrom(to_timestamp(alert.fired_at_ms))
    if alert.resolved_at_ms is not None:
        message.resolved_at.CopyFrom(to_timestamp(alert.resolved_at_ms))
    return message


def _silence_to_proto(silence: Silence, now_ms: int) -> pb.Silence:
    return pb.Silence(
        id=silence.silence_id,
        matchers=[pb.Matcher(name=m.name, type=int(m.type), value=m.value) for m in silence.matchers],
        starts_at=to_timestamp(silence.starts_at_ms),
        ends_at=to_timestamp(silence.ends_at_ms),
        author=silence.author,
        comment=silence.comment,
        created_at=to_timestamp(silence.created_at_ms),
        status=silence.status(now_ms),
    )


def _matcher_from(message: pb.Matcher) -> Matcher:
    try:
        kind = MatchType(message.type)
    except ValueError:
        raise InvalidArgument(f"matcher type {message.type} is not one of {[t.value for t in MatchType]}") from None
    return Matcher(message.name, kind, message.value)


def _states_from(values: list[int]) -> set[State]:
    states = set()
    for value in values:
        if value not in _STATE_FROM_PROTO:
            raise InvalidArgument(f"states: {value} is not a valid AlertState")
        states.add(_STATE_FROM_PROTO[value])
    return states


class AlertServicer(alerts_pb2_grpc.AlertServiceServicer):
    def __init__(self, ctx: AlertsContext, pool: Executor) -> None:
        self._ctx = ctx
        self._pool = pool

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, work, *args)

    async def ListAlerts(self, request: pb.ListAlertsRequest, context: Any) -> pb.ListAlertsResponse:
        found = await self._run(
            service.list_alerts, self._ctx, bearer_token(context), _states_from(list(request.states)), request.matchers
        )
        return pb.ListAlertsResponse(alerts=[alert_to_proto(alert, silenced) for alert, silenced in found])

    async def WatchAlerts(self, request: pb.WatchAlertsRequest, context: Any) -> AsyncIterator[pb.WatchAlertsResponse]:
        token = bearer_token(context)
        every = {State.PENDING, State.FIRING, State.RESOLVED}
        current = await self._run(service.list_alerts, self._ctx, token, every, request.matchers)
        selected = service.matchers_from(request.matchers)
        subscription = self._ctx.engine_hub.subscribe(asyncio.get_running_loop())
        try:
            yield pb.WatchAlertsResponse(alerts=[alert_to_proto(a, s) for a, s in current], snapshot=True)
            while True:
                changed = await subscription.queue.get()
                if changed is None:
                    raise ResourceExhausted("this watcher fell too far behind the changes; watch again")
                now = self._ctx.now_ms()
                matching = [a for a in changed if label_set_matches(tuple(a.labels.items()), selected)]
                if matching:
                    yield pb.WatchAlertsResponse(
                        alerts=[alert_to_proto(a, silenced_by(a, self._ctx.dispatcher.silences, now)) for a in matching]
                    )
        finally:
            self._ctx.engine_hub.unsubscribe(subscription)

    async def ListRules(self, request: pb.ListRulesRequest, context: Any) -> pb.ListRulesResponse:
        self._ctx.credentials.require_reader(bearer_token(context))
        engine = self._ctx.engine
        counts: dict[str, dict[State, int]] = {}
        for alert in engine.alerts():
            counts.setdefault(alert.rule, {}).setdefault(alert.state, 0)
            counts[alert.rule][alert.state] += 1
        rules = []
        for group in engine.rules.groups:
            for rule in group.rules:
                message = pb.Rule(
                    group=group.name,
                    name=rule.name,
                    kind=rule.kind,
                    condition=rule.condition.describe(),
                    interval=_duration(group.interval_s),
                    labels=dict(rule.labels),
                    key=rule.key,
                    annotations=dict(rule.annotations),
                    keep_firing_for=_duration(rule.keep_firing_for_s),
                    pending=counts.get(rule.key, {}).get(State.PENDING, 0),
                    firing=counts.get(rule.key, {}).get(State.FIRING, 0),
                    **{"for": _duration(rule.for_s)},
                )
                health = engine.health(rule.key)
                if health is not None:
                    message.last_evaluation.CopyFrom(to_timestamp(health.last_evaluation_ms))
                    message.last_evaluation_duration.CopyFrom(_duration(health.duration_ms / 1000))
                    message.last_error = health.error
                rules.append(message)
        return pb.ListRulesResponse(
            rules=rules, file=str(self._ctx.rules_path), loaded_at=to_timestamp(engine.loaded_at_ms)
        )

    async def ReloadRules(self, request: pb.ReloadRulesRequest, context: Any) -> pb.ReloadRulesResponse:
        rules = await self._run(service.reload_rules, self._ctx, bearer_token(context))
        return pb.ReloadRulesResponse(groups=len(rules.groups), rules=len(rules.rules))

    async def CreateSilence(self, request: pb.CreateSilenceRequest, context: Any) -> pb.CreateSilenceResponse:
        matchers = [_matcher_from(m) for m in request.matchers]
        starts = to_epoch_ms(request.starts_at, "starts_at") if request.HasField("starts_at") else None
        ends = to_epoch_ms(request.ends_at, "ends_at") if request.HasField("ends_at") else None
        silence = await self._run(
            service.create_silence,
            self._ctx,
            bearer_token(context),
            matchers,
            starts,
            ends,
            request.author,
            request.comment,
        )
        return pb.CreateSilenceResponse(silence=_silence_to_proto(silence, self._ctx.now_ms()))

    async def ListSilences(self, request: pb.ListSilencesRequest, context: Any) -> pb.ListSilencesResponse:
        silences = await self._run(service.list_silences, self._ctx, bearer_token(context), request.include_expired)
        now = self._ctx.now_ms()
        return pb.ListSilencesResponse(silences=[_silence_to_proto(s, now) for s in silences])

    async def ExpireSilence(self, request: pb.ExpireSilenceRequest, context: Any) -> pb.ExpireSilenceResponse:
        silence = await self._run(service.expire_silence, self._ctx, bearer_token(context), request.id)
        return pb.ExpireSilenceResponse(silence=_silence_to_proto(silence, self._ctx.now_ms()))
