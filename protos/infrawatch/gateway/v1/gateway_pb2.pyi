import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from infrawatch.agents.v1 import agents_pb2 as _agents_pb2
from infrawatch.alerts.v1 import alerts_pb2 as _alerts_pb2
from infrawatch.metrics.v1 import metrics_pb2 as _metrics_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Availability(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AVAILABILITY_UNSPECIFIED: _ClassVar[Availability]
    AVAILABILITY_AVAILABLE: _ClassVar[Availability]
    AVAILABILITY_UNAVAILABLE: _ClassVar[Availability]
AVAILABILITY_UNSPECIFIED: Availability
AVAILABILITY_AVAILABLE: Availability
AVAILABILITY_UNAVAILABLE: Availability

class AgentRef(_message.Message):
    __slots__ = ("agent_id", "hostname")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    hostname: str
    def __init__(self, agent_id: _Optional[str] = ..., hostname: _Optional[str] = ...) -> None: ...

class MetricValue(_message.Message):
    __slots__ = ("name", "value", "sampled_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    sampled_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., sampled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AgentView(_message.Message):
    __slots__ = ("agent", "latest", "metrics", "firing_alerts", "alerts")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    FIRING_ALERTS_FIELD_NUMBER: _ClassVar[int]
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    agent: _agents_pb2.Agent
    latest: _containers.RepeatedCompositeFieldContainer[MetricValue]
    metrics: Availability
    firing_alerts: _containers.RepeatedCompositeFieldContainer[_alerts_pb2.Alert]
    alerts: Availability
    def __init__(self, agent: _Optional[_Union[_agents_pb2.Agent, _Mapping]] = ..., latest: _Optional[_Iterable[_Union[MetricValue, _Mapping]]] = ..., metrics: _Optional[_Union[Availability, str]] = ..., firing_alerts: _Optional[_Iterable[_Union[_alerts_pb2.Alert, _Mapping]]] = ..., alerts: _Optional[_Union[Availability, str]] = ...) -> None: ...

class GetFleetOverviewRequest(_message.Message):
    __slots__ = ("top_metric", "top_n", "recent_limit")
    TOP_METRIC_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    RECENT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    top_metric: str
    top_n: int
    recent_limit: int
    def __init__(self, top_metric: _Optional[str] = ..., top_n: _Optional[int] = ..., recent_limit: _Optional[int] = ...) -> None: ...

class StatusCount(_message.Message):
    __slots__ = ("status", "count")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    status: _agents_pb2.AgentStatus
    count: int
    def __init__(self, status: _Optional[_Union[_agents_pb2.AgentStatus, str]] = ..., count: _Optional[int] = ...) -> None: ...

class HostValue(_message.Message):
    __slots__ = ("hostname", "value", "sampled_at")
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_AT_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    value: float
    sampled_at: _timestamp_pb2.Timestamp
    def __init__(self, hostname: _Optional[str] = ..., value: _Optional[float] = ..., sampled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetFleetOverviewResponse(_message.Message):
    __slots__ = ("counts", "recently_down", "top_hosts", "top_metric", "metrics", "firing_alerts", "alerts", "scrape_targets")
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    RECENTLY_DOWN_FIELD_NUMBER: _ClassVar[int]
    TOP_HOSTS_FIELD_NUMBER: _ClassVar[int]
    TOP_METRIC_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    FIRING_ALERTS_FIELD_NUMBER: _ClassVar[int]
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    SCRAPE_TARGETS_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedCompositeFieldContainer[StatusCount]
    recently_down: _containers.RepeatedCompositeFieldContainer[AgentView]
    top_hosts: _containers.RepeatedCompositeFieldContainer[HostValue]
    top_metric: str
    metrics: Availability
    firing_alerts: _containers.RepeatedCompositeFieldContainer[_alerts_pb2.Alert]
    alerts: Availability
    scrape_targets: _containers.RepeatedCompositeFieldContainer[ScrapeTarget]
    def __init__(self, counts: _Optional[_Iterable[_Union[StatusCount, _Mapping]]] = ..., recently_down: _Optional[_Iterable[_Union[AgentView, _Mapping]]] = ..., top_hosts: _Optional[_Iterable[_Union[HostValue, _Mapping]]] = ..., top_metric: _Optional[str] = ..., metrics: _Optional[_Union[Availability, str]] = ..., firing_alerts: _Optional[_Iterable[_Union[_alerts_pb2.Alert, _Mapping]]] = ..., alerts: _Optional[_Union[Availability, str]] = ..., scrape_targets: _Optional[_Iterable[_Union[ScrapeTarget, _Mapping]]] = ...) -> None: ...

class ScrapeTarget(_message.Message):
    __slots__ = ("instance", "job", "up", "sampled_at")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_AT_FIELD_NUMBER: _ClassVar[int]
    instance: str
    job: str
    up: bool
    sampled_at: _timestamp_pb2.Timestamp
    def __init__(self, instance: _Optional[str] = ..., job: _Optional[str] = ..., up: _Optional[bool] = ..., sampled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ("statuses", "label_selector", "page_size", "page_token")
    class LabelSelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedScalarFieldContainer[_agents_pb2.AgentStatus]
    label_selector: _containers.ScalarMap[str, str]
    page_size: int
    page_token: str
    def __init__(self, statuses: _Optional[_Iterable[_Union[_agents_pb2.AgentStatus, str]]] = ..., label_selector: _Optional[_Mapping[str, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents", "next_page_token", "metrics")
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentView]
    next_page_token: str
    metrics: Availability
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentView, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., metrics: _Optional[_Union[Availability, str]] = ...) -> None: ...

class GetAgentRequest(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: AgentRef
    def __init__(self, agent: _Optional[_Union[AgentRef, _Mapping]] = ...) -> None: ...

class GetAgentResponse(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: AgentView
    def __init__(self, agent: _Optional[_Union[AgentView, _Mapping]] = ...) -> None: ...

class QueryAgentMetricsRequest(_message.Message):
    __slots__ = ("agent", "metric", "label_filter", "start", "end", "step", "aggregation", "group_by")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    LABEL_FILTER_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    agent: AgentRef
    metric: str
    label_filter: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    step: _duration_pb2.Duration
    aggregation: _metrics_pb2.Aggregation
    group_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent: _Optional[_Union[AgentRef, _Mapping]] = ..., metric: _Optional[str] = ..., label_filter: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., step: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., aggregation: _Optional[_Union[_metrics_pb2.Aggregation, str]] = ..., group_by: _Optional[_Iterable[str]] = ...) -> None: ...

class QueryAgentMetricsResponse(_message.Message):
    __slots__ = ("agent", "series")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    agent: _agents_pb2.Agent
    series: _containers.RepeatedCompositeFieldContainer[_metrics_pb2.SeriesPoints]
    def __init__(self, agent: _Optional[_Union[_agents_pb2.Agent, _Mapping]] = ..., series: _Optional[_Iterable[_Union[_metrics_pb2.SeriesPoints, _Mapping]]] = ...) -> None: ...

class QueryMetricsRequest(_message.Message):
    __slots__ = ("query",)
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query: _metrics_pb2.QueryRangeRequest
    def __init__(self, query: _Optional[_Union[_metrics_pb2.QueryRangeRequest, _Mapping]] = ...) -> None: ...

class QueryMetricsResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: _metrics_pb2.QueryRangeResponse
    def __init__(self, result: _Optional[_Union[_metrics_pb2.QueryRangeResponse, _Mapping]] = ...) -> None: ...

class WatchAgentRequest(_message.Message):
    __slots__ = ("agent", "metric_selector")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    METRIC_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    agent: AgentRef
    metric_selector: str
    def __init__(self, agent: _Optional[_Union[AgentRef, _Mapping]] = ..., metric_selector: _Optional[str] = ...) -> None: ...

class StatusChange(_message.Message):
    __slots__ = ("status", "observed_at")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    status: _agents_pb2.AgentStatus
    observed_at: _timestamp_pb2.Timestamp
    def __init__(self, status: _Optional[_Union[_agents_pb2.AgentStatus, str]] = ..., observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WatchAgentResponse(_message.Message):
    __slots__ = ("status", "samples", "notice")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    status: StatusChange
    samples: _metrics_pb2.WatchMetricsResponse
    notice: str
    def __init__(self, status: _Optional[_Union[StatusChange, _Mapping]] = ..., samples: _Optional[_Union[_metrics_pb2.WatchMetricsResponse, _Mapping]] = ..., notice: _Optional[str] = ...) -> None: ...

class DeregisterAgentRequest(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: AgentRef
    def __init__(self, agent: _Optional[_Union[AgentRef, _Mapping]] = ...) -> None: ...

class DeregisterAgentResponse(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: _agents_pb2.Agent
    def __init__(self, agent: _Optional[_Union[_agents_pb2.Agent, _Mapping]] = ...) -> None: ...

class ApproveAgentRequest(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: AgentRef
    def __init__(self, agent: _Optional[_Union[AgentRef, _Mapping]] = ...) -> None: ...

class ApproveAgentResponse(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: _agents_pb2.Agent
    def __init__(self, agent: _Optional[_Union[_agents_pb2.Agent, _Mapping]] = ...) -> None: ...
