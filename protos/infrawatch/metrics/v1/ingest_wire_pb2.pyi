from infrawatch.metrics.v1 import metrics_pb2 as _metrics_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MetricBatchSeriesBytes(_message.Message):
    __slots__ = ("sequence", "metadata", "series")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    metadata: _containers.RepeatedCompositeFieldContainer[_metrics_pb2.MetricMetadata]
    series: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, sequence: _Optional[int] = ..., metadata: _Optional[_Iterable[_Union[_metrics_pb2.MetricMetadata, _Mapping]]] = ..., series: _Optional[_Iterable[bytes]] = ...) -> None: ...
