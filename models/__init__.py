"""Close probability, close timing, revenue forecast, baselines and anomaly detectors.

Empty until the models issue lands; it depends only on ``features``.
"""
