"""A synthetic company's CRM history, with the ground truth only a simulator can know.

Reps of different skill and date habits in teams and regions, products of different size
and cycle, demand with growth and seasonality, a stage funnel driven by a latent buyer
intent that shows only gradually in what the CRM records (stage speed, pushes, amount cuts,
regressions, activities), quarter-end bookings, targets, and optionally five labelled
anomalies. ``truth`` holds P(won | the simulator's state) for every open deal every Monday
and the list of injected anomalies.

>>> company = simulate_company(SimConfig(n_deals=2_000, months=24))  # doctest: +SKIP
>>> write_company(company, "sim-data", file_format="parquet")  # doctest: +SKIP

Company profiles (``company_config``: small, enterprise, smb, declining, regime) are named
knob sets; export profiles (``export_company``: current_state, stale, thinnest, ...) write the
same company the way thin real CRM exports come out:

>>> company = simulate_company(company_config("smb", seed=3))  # doctest: +SKIP
>>> write_company(export_company(company, "thinnest"), "thin")  # doctest: +SKIP
"""

from pipelines.simulate.company import SimulatedCompany, simulate_company
from pipelines.simulate.config import SimConfig
from pipelines.simulate.exports import (
    EXPORT_PROFILES,
    export_company,
    export_pipeline,
    export_profile,
)
from pipelines.simulate.profiles import COMPANY_PROFILES, company_config
from pipelines.simulate.writer import write_company

__all__ = [
    "COMPANY_PROFILES",
    "EXPORT_PROFILES",
    "SimConfig",
    "SimulatedCompany",
    "company_config",
    "export_company",
    "export_pipeline",
    "export_profile",
    "simulate_company",
    "write_company",
]
