"""PromQL, the whole language of Prometheus 3 over classic float series, evaluated on numpy.

Shaped like Prometheus' own `promql/`: `parser` (limits, then promql-parser), `values`, the
`evaluator` (selection, subqueries, `@`, budgets), and `functions`, `aggregations` and
`operators` in files of their own. The JSON shape of answers belongs to the HTTP edge
(`services/metrics/prom/`), not here.
"""
