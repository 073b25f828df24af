"""The deal models: close probability, close timing, their training sets, reasons and scores.

Everything here answers a question about one open deal as of a day: will it be won, in which
month, and why. Modules import ``features`` and ``models.metrics`` only — never the forecast or
anomaly wings, nor ``serving`` or ``pipelines``.
"""
