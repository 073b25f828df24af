"""The FastAPI service: reads what the pipeline jobs published, never trains.

Empty until the API issue lands.
"""
