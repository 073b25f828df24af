"""The revenue forecast wing: bookings by month and quarter, its baselines, backtest and accuracy.

``revenue`` is the Monte Carlo forecast (open pipeline through the deal models plus new
business from ``newbiz``); ``baselines`` and ``weighted`` are what it must beat; ``backtest``
rebuilds the world at each past origin; ``accuracy`` scores kept forecasts. Modules import
``features``, ``models.metrics``, ``models.tracking`` and ``models.deals`` — never
``models.anomalies``, ``serving`` or ``pipelines``.
"""
