from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PromWriteRequest(_message.Message):
    __slots__ = ("timeseries", "metadata")
    TIMESERIES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    timeseries: _containers.RepeatedCompositeFieldContainer[PromTimeSeries]
    metadata: _containers.RepeatedCompositeFieldContainer[PromMetricMetadata]
    def __init__(self, timeseries: _Optional[_Iterable[_Union[PromTimeSeries, _Mapping]]] = ..., metadata: _Optional[_Iterable[_Union[PromMetricMetadata, _Mapping]]] = ...) -> None: ...

class PromTimeSeries(_message.Message):
    __slots__ = ("labels", "samples", "exemplars", "histograms")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    EXEMPLARS_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAMS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[PromLabel]
    samples: _containers.RepeatedCompositeFieldContainer[PromSample]
    exemplars: _containers.RepeatedScalarFieldContainer[bytes]
    histograms: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, labels: _Optional[_Iterable[_Union[PromLabel, _Mapping]]] = ..., samples: _Optional[_Iterable[_Union[PromSample, _Mapping]]] = ..., exemplars: _Optional[_Iterable[bytes]] = ..., histograms: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PromLabel(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class PromSample(_message.Message):
    __slots__ = ("value", "timestamp")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    value: float
    timestamp: int
    def __init__(self, value: _Optional[float] = ..., timestamp: _Optional[int] = ...) -> None: ...

class PromMetricMetadata(_message.Message):
    __slots__ = ("type", "metric_family_name", "help", "unit")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[PromMetricMetadata.Type]
        COUNTER: _ClassVar[PromMetricMetadata.Type]
        GAUGE: _ClassVar[PromMetricMetadata.Type]
        HISTOGRAM: _ClassVar[PromMetricMetadata.Type]
        GAUGEHISTOGRAM: _ClassVar[PromMetricMetadata.Type]
        SUMMARY: _ClassVar[PromMetricMetadata.Type]
        INFO: _ClassVar[PromMetricMetadata.Type]
        STATESET: _ClassVar[PromMetricMetadata.Type]
    UNKNOWN: PromMetricMetadata.Type
    COUNTER: PromMetricMetadata.Type
    GAUGE: PromMetricMetadata.Type
    HISTOGRAM: PromMetricMetadata.Type
    GAUGEHISTOGRAM: PromMetricMetadata.Type
    SUMMARY: PromMetricMetadata.Type
    INFO: PromMetricMetadata.Type
    STATESET: PromMetricMetadata.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FAMILY_NAME_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    type: PromMetricMetadata.Type
    metric_family_name: str
    help: str
    unit: str
    def __init__(self, type: _Optional[_Union[PromMetricMetadata.Type, str]] = ..., metric_family_name: _Optional[str] = ..., help: _Optional[str] = ..., unit: _Optional[str] = ...) -> None: ...

class PromWriteRequestSeriesBytes(_message.Message):
    __slots__ = ("timeseries", "metadata")
    TIMESERIES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    timeseries: _containers.RepeatedScalarFieldContainer[bytes]
    metadata: _containers.RepeatedCompositeFieldContainer[PromMetricMetadata]
    def __init__(self, timeseries: _Optional[_Iterable[bytes]] = ..., metadata: _Optional[_Iterable[_Union[PromMetricMetadata, _Mapping]]] = ...) -> None: ...

class PromLabelsOnly(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[PromLabel]
    def __init__(self, labels: _Optional[_Iterable[_Union[PromLabel, _Mapping]]] = ...) -> None: ...
