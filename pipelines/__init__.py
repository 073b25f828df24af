"""The jobs and the ``dealcast`` CLI: simulate, ingest, snapshot, kpis, demo."""
