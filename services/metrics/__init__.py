"""The metrics bounded context: streaming ingest, chunked storage, queries and live watch."""
