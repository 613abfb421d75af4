from infrawatch.metrics.v1 import metrics_pb2 as _metrics_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MetricBatchColumns(_message.Message):
    __slots__ = ("sequence", "metadata", "series")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    metadata: _containers.RepeatedCompositeFieldContainer[_metrics_pb2.MetricMetadata]
    series: _containers.RepeatedCompositeFieldContainer[SeriesColumns]
    def __init__(self, sequence: _Optional[int] = ..., metadata: _Optional[_Iterable[_Union[_metrics_pb2.MetricMetadata, _Mapping]]] = ..., series: _Optional[_Iterable[_Union[SeriesColumns, _Mapping]]] = ...) -> None: ...

class SeriesColumns(_message.Message):
    __slots__ = ("labels", "ref", "timestamps_ms", "values", "start_ms", "interval_ms")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_MS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[_metrics_pb2.Label]
    ref: int
    timestamps_ms: bytes
    values: bytes
    start_ms: int
    interval_ms: int
    def __init__(self, labels: _Optional[_Iterable[_Union[_metrics_pb2.Label, _Mapping]]] = ..., ref: _Optional[int] = ..., timestamps_ms: _Optional[bytes] = ..., values: _Optional[bytes] = ..., start_ms: _Optional[int] = ..., interval_ms: _Optional[int] = ...) -> None: ...

class MetricBatchSeriesBytes(_message.Message):
    __slots__ = ("sequence", "metadata", "series")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    metadata: _containers.RepeatedCompositeFieldContainer[_metrics_pb2.MetricMetadata]
    series: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, sequence: _Optional[int] = ..., metadata: _Optional[_Iterable[_Union[_metrics_pb2.MetricMetadata, _Mapping]]] = ..., series: _Optional[_Iterable[bytes]] = ...) -> None: ...
