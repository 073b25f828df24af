"""The anomaly detectors: KPI series against their own band, reps against peers, data quality.

Every detector returns rows of ``detections.ANOMALY_SCHEMA``; ``findings`` folds the pieces of
one root cause together; ``evaluation`` scores detectors against the simulator's labels.
Modules import ``features``, ``models.metrics`` and the Prophet helpers and quarter-end
flags of ``models.forecast.newbiz`` — never ``models.deals``, ``serving`` or ``pipelines``.
"""
