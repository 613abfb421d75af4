import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MetricType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_TYPE_UNSPECIFIED: _ClassVar[MetricType]
    METRIC_TYPE_GAUGE: _ClassVar[MetricType]
    METRIC_TYPE_COUNTER: _ClassVar[MetricType]

class RejectionReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REJECTION_REASON_UNSPECIFIED: _ClassVar[RejectionReason]
    REJECTION_REASON_INVALID_LABELS: _ClassVar[RejectionReason]
    REJECTION_REASON_EMPTY_METRIC_NAME: _ClassVar[RejectionReason]
    REJECTION_REASON_TYPE_CONFLICT: _ClassVar[RejectionReason]
    REJECTION_REASON_CARDINALITY_LIMIT: _ClassVar[RejectionReason]
    REJECTION_REASON_TOO_MANY_SERIES: _ClassVar[RejectionReason]
    REJECTION_REASON_UNKNOWN_REF: _ClassVar[RejectionReason]
    REJECTION_REASON_LENGTH_MISMATCH: _ClassVar[RejectionReason]
    REJECTION_REASON_TOO_FAR_IN_FUTURE: _ClassVar[RejectionReason]
    REJECTION_REASON_TOO_OLD: _ClassVar[RejectionReason]
    REJECTION_REASON_OUT_OF_ORDER: _ClassVar[RejectionReason]
    REJECTION_REASON_INVALID_METADATA: _ClassVar[RejectionReason]
    REJECTION_REASON_FOREIGN_SERIES: _ClassVar[RejectionReason]

class Aggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATION_NONE: _ClassVar[Aggregation]
    AGGREGATION_AVG: _ClassVar[Aggregation]
    AGGREGATION_MIN: _ClassVar[Aggregation]
    AGGREGATION_MAX: _ClassVar[Aggregation]
    AGGREGATION_SUM: _ClassVar[Aggregation]
    AGGREGATION_COUNT: _ClassVar[Aggregation]
    AGGREGATION_LAST: _ClassVar[Aggregation]
    AGGREGATION_RATE: _ClassVar[Aggregation]
METRIC_TYPE_UNSPECIFIED: MetricType
METRIC_TYPE_GAUGE: MetricType
METRIC_TYPE_COUNTER: MetricType
REJECTION_REASON_UNSPECIFIED: RejectionReason
REJECTION_REASON_INVALID_LABELS: RejectionReason
REJECTION_REASON_EMPTY_METRIC_NAME: RejectionReason
REJECTION_REASON_TYPE_CONFLICT: RejectionReason
REJECTION_REASON_CARDINALITY_LIMIT: RejectionReason
REJECTION_REASON_TOO_MANY_SERIES: RejectionReason
REJECTION_REASON_UNKNOWN_REF: RejectionReason
REJECTION_REASON_LENGTH_MISMATCH: RejectionReason
REJECTION_REASON_TOO_FAR_IN_FUTURE: RejectionReason
REJECTION_REASON_TOO_OLD: RejectionReason
REJECTION_REASON_OUT_OF_ORDER: RejectionReason
REJECTION_REASON_INVALID_METADATA: RejectionReason
REJECTION_REASON_FOREIGN_SERIES: RejectionReason
AGGREGATION_NONE: Aggregation
AGGREGATION_AVG: Aggregation
AGGREGATION_MIN: Aggregation
AGGREGATION_MAX: Aggregation
AGGREGATION_SUM: Aggregation
AGGREGATION_COUNT: Aggregation
AGGREGATION_LAST: Aggregation
AGGREGATION_RATE: Aggregation

class Label(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class MetricMetadata(_message.Message):
    __slots__ = ("name", "type", "unit", "help")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: MetricType
    unit: str
    help: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[MetricType, str]] = ..., unit: _Optional[str] = ..., help: _Optional[str] = ...) -> None: ...

class SeriesSamples(_message.Message):
    __slots__ = ("labels", "ref", "timestamps_ms", "values", "start_ms", "interval_ms")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_MS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    ref: int
    timestamps_ms: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    start_ms: int
    interval_ms: int
    def __init__(self, labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., ref: _Optional[int] = ..., timestamps_ms: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ..., start_ms: _Optional[int] = ..., interval_ms: _Optional[int] = ...) -> None: ...

class MetricBatch(_message.Message):
    __slots__ = ("sequence", "metadata", "series")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    metadata: _containers.RepeatedCompositeFieldContainer[MetricMetadata]
    series: _containers.RepeatedCompositeFieldContainer[SeriesSamples]
    def __init__(self, sequence: _Optional[int] = ..., metadata: _Optional[_Iterable[_Union[MetricMetadata, _Mapping]]] = ..., series: _Optional[_Iterable[_Union[SeriesSamples, _Mapping]]] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("series_index", "reason", "samples", "message")
    SERIES_INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    series_index: int
    reason: RejectionReason
    samples: int
    message: str
    def __init__(self, series_index: _Optional[int] = ..., reason: _Optional[_Union[RejectionReason, str]] = ..., samples: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class BatchAck(_message.Message):
    __slots__ = ("sequence", "samples_accepted", "samples_rejected", "samples_duplicate", "rejections")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_REJECTED_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    samples_accepted: int
    samples_rejected: int
    samples_duplicate: int
    rejections: _containers.RepeatedCompositeFieldContainer[Rejection]
    def __init__(self, sequence: _Optional[int] = ..., samples_accepted: _Optional[int] = ..., samples_rejected: _Optional[int] = ..., samples_duplicate: _Optional[int] = ..., rejections: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ...) -> None: ...

class LabelMatcher(_message.Message):
    __slots__ = ("name", "type", "value")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_EQUAL: _ClassVar[LabelMatcher.Type]
        TYPE_NOT_EQUAL: _ClassVar[LabelMatcher.Type]
        TYPE_REGEX: _ClassVar[LabelMatcher.Type]
        TYPE_NOT_REGEX: _ClassVar[LabelMatcher.Type]
    TYPE_EQUAL: LabelMatcher.Type
    TYPE_NOT_EQUAL: LabelMatcher.Type
    TYPE_REGEX: LabelMatcher.Type
    TYPE_NOT_REGEX: LabelMatcher.Type
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: LabelMatcher.Type
    value: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[LabelMatcher.Type, str]] = ..., value: _Optional[str] = ...) -> None: ...

class Selector(_message.Message):
    __slots__ = ("selector", "matchers")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    MATCHERS_FIELD_NUMBER: _ClassVar[int]
    selector: str
    matchers: _containers.RepeatedCompositeFieldContainer[LabelMatcher]
    def __init__(self, selector: _Optional[str] = ..., matchers: _Optional[_Iterable[_Union[LabelMatcher, _Mapping]]] = ...) -> None: ...

class QueryRangeRequest(_message.Message):
    __slots__ = ("selector", "start", "end", "step", "aggregation", "group_by")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    selector: Selector
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    step: _duration_pb2.Duration
    aggregation: Aggregation
    group_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, selector: _Optional[_Union[Selector, _Mapping]] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., step: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., aggregation: _Optional[_Union[Aggregation, str]] = ..., group_by: _Optional[_Iterable[str]] = ...) -> None: ...

class SeriesPoints(_message.Message):
    __slots__ = ("labels", "timestamps_ms", "values")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_MS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    timestamps_ms: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., timestamps_ms: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class QueryRangeResponse(_message.Message):
    __slots__ = ("series", "matched_series")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    MATCHED_SERIES_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[SeriesPoints]
    matched_series: int
    def __init__(self, series: _Optional[_Iterable[_Union[SeriesPoints, _Mapping]]] = ..., matched_series: _Optional[int] = ...) -> None: ...

class LatestValuesRequest(_message.Message):
    __slots__ = ("selector", "highest", "since_ms")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    HIGHEST_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    selector: Selector
    highest: int
    since_ms: int
    def __init__(self, selector: _Optional[_Union[Selector, _Mapping]] = ..., highest: _Optional[int] = ..., since_ms: _Optional[int] = ...) -> None: ...

class LatestSample(_message.Message):
    __slots__ = ("labels", "timestamp_ms", "value")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    timestamp_ms: int
    value: float
    def __init__(self, labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., timestamp_ms: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...

class LatestValuesResponse(_message.Message):
    __slots__ = ("samples",)
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[LatestSample]
    def __init__(self, samples: _Optional[_Iterable[_Union[LatestSample, _Mapping]]] = ...) -> None: ...

class ListSeriesRequest(_message.Message):
    __slots__ = ("selector", "page_size", "page_token")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    selector: Selector
    page_size: int
    page_token: str
    def __init__(self, selector: _Optional[_Union[Selector, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class SeriesLabels(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    def __init__(self, labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ...) -> None: ...

class ListSeriesResponse(_message.Message):
    __slots__ = ("series", "next_page_token")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[SeriesLabels]
    next_page_token: str
    def __init__(self, series: _Optional[_Iterable[_Union[SeriesLabels, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListMetricNamesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListMetricNamesResponse(_message.Message):
    __slots__ = ("metrics", "conflicts", "label_names")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedCompositeFieldContainer[MetricMetadata]
    conflicts: _containers.RepeatedCompositeFieldContainer[MetadataConflict]
    label_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, metrics: _Optional[_Iterable[_Union[MetricMetadata, _Mapping]]] = ..., conflicts: _Optional[_Iterable[_Union[MetadataConflict, _Mapping]]] = ..., label_names: _Optional[_Iterable[str]] = ...) -> None: ...

class MetadataConflict(_message.Message):
    __slots__ = ("kept", "refused", "agent_id", "times")
    KEPT_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMES_FIELD_NUMBER: _ClassVar[int]
    kept: MetricMetadata
    refused: MetricMetadata
    agent_id: str
    times: int
    def __init__(self, kept: _Optional[_Union[MetricMetadata, _Mapping]] = ..., refused: _Optional[_Union[MetricMetadata, _Mapping]] = ..., agent_id: _Optional[str] = ..., times: _Optional[int] = ...) -> None: ...

class WatchMetricsRequest(_message.Message):
    __slots__ = ("selector",)
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    selector: Selector
    def __init__(self, selector: _Optional[_Union[Selector, _Mapping]] = ...) -> None: ...

class WatchMetricsResponse(_message.Message):
    __slots__ = ("series",)
    SERIES_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[SeriesPoints]
    def __init__(self, series: _Optional[_Iterable[_Union[SeriesPoints, _Mapping]]] = ...) -> None: ...

class InstantQueryRequest(_message.Message):
    __slots__ = ("query", "time")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    query: str
    time: _timestamp_pb2.Timestamp
    def __init__(self, query: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class InstantSample(_message.Message):
    __slots__ = ("labels", "value")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    value: float
    def __init__(self, labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., value: _Optional[float] = ...) -> None: ...

class InstantQueryResponse(_message.Message):
    __slots__ = ("result_type", "samples", "scalar", "text", "time_ms")
    RESULT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SCALAR_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    result_type: str
    samples: _containers.RepeatedCompositeFieldContainer[InstantSample]
    scalar: float
    text: str
    time_ms: int
    def __init__(self, result_type: _Optional[str] = ..., samples: _Optional[_Iterable[_Union[InstantSample, _Mapping]]] = ..., scalar: _Optional[float] = ..., text: _Optional[str] = ..., time_ms: _Optional[int] = ...) -> None: ...

class InstantQueriesRequest(_message.Message):
    __slots__ = ("queries", "time")
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedScalarFieldContainer[str]
    time: _timestamp_pb2.Timestamp
    def __init__(self, queries: _Optional[_Iterable[str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class InstantQueryResult(_message.Message):
    __slots__ = ("response", "error_code", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: InstantQueryResponse
    error_code: int
    error: str
    def __init__(self, response: _Optional[_Union[InstantQueryResponse, _Mapping]] = ..., error_code: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class InstantQueriesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[InstantQueryResult]
    def __init__(self, results: _Optional[_Iterable[_Union[InstantQueryResult, _Mapping]]] = ...) -> None: ...

class RangeQueryRequest(_message.Message):
    __slots__ = ("query", "start", "end", "step")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    query: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    step: _duration_pb2.Duration
    def __init__(self, query: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., step: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RangeQueryResponse(_message.Message):
    __slots__ = ("series", "result_type")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    RESULT_TYPE_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[SeriesPoints]
    result_type: str
    def __init__(self, series: _Optional[_Iterable[_Union[SeriesPoints, _Mapping]]] = ..., result_type: _Optional[str] = ...) -> None: ...
