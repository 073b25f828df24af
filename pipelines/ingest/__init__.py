"""Ingest: convert a source into the canonical tables, validate every row, store atomically.

``ingest_sources(sources, store=..., source_format=...)`` reads a source with its adapter
(canonical CSV/Parquet, a flat CRM report with a column mapping, Salesforce Opportunity +
OpportunityHistory, HubSpot deals), checks every row against the data contract, writes the
rows that fail to ``<data>/quarantine/<timestamp>.csv`` (``source_file, table, row_number,
column, value, reason``) and the others to a new store version, made current atomically.
``loaded + quarantined == read`` for every table. A source that cannot be used at all raises
:class:`IngestError` with one message naming the file and the fix, before anything is written.

Modules: ``reading`` (files), ``mapping`` (--map), ``parsing`` (value parsers), ``checks``
(the row-check engine), ``deals`` / ``related`` (the checks per table), ``stages``
(pipeline config), ``sources`` / ``salesforce`` (adapters), ``run`` (the job),
``report`` (counts and printing).
"""

from pipelines.ingest.errors import IngestError
from pipelines.ingest.report import IngestReport, TableCounts, print_report
from pipelines.ingest.run import SOURCE_FORMATS, ingest_sources

__all__ = [
    "IngestError",
    "IngestReport",
    "TableCounts",
    "SOURCE_FORMATS",
    "ingest_sources",
    "print_report",
]
