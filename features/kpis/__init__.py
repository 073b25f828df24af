"""The KPI catalogue: per-period sales KPIs as known at a cutoff, and their series per segment.

``table`` builds the KPI table (one row per period × group) from ``periods`` (period grids,
the history as known at a cutoff), ``pipeline``, ``stages``, ``outcomes`` and ``activity``
(one family of KPIs each); ``definitions`` holds every column's definition; ``series`` turns
them into the counted monthly/weekly series the anomaly detectors judge. Imports only
``features`` — nothing from ``models``, ``serving`` or ``pipelines``.
"""
