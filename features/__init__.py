"""Point-in-time features of a deal history: contract, store, pipeline snapshots, KPIs.

Everything here is a pure function of (history, as_of): nothing reads a row dated after
its ``as_of``. This package imports nothing from models, pipelines or serving.
"""

from features.contract import DEFAULT_PIPELINE, DealHistory, PipelineConfig, Stage
from features.store import Store, StoreNotFoundError

__all__ = [
    "DEFAULT_PIPELINE",
    "DealHistory",
    "PipelineConfig",
    "Stage",
    "Store",
    "StoreNotFoundError",
]
