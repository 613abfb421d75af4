"""The metrics API's aggregations by the names people write (rules files, the console's URLs)."""

from __future__ import annotations

from infrawatch.metrics.v1 import metrics_pb2

BY_NAME: dict[str, int] = {
    "avg": metrics_pb2.AGGREGATION_AVG,
    "min": metrics_pb2.AGGREGATION_MIN,
    "max": metrics_pb2.AGGREGATION_MAX,
    "sum": metrics_pb2.AGGREGATION_SUM,
    "count": metrics_pb2.AGGREGATION_COUNT,
    "last": metrics_pb2.AGGREGATION_LAST,
    "rate": metrics_pb2.AGGREGATION_RATE,
}
