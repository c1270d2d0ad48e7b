"""fedsim: discrete-event simulation of federated fine-tuning on device fleets."""

import os

from fedsim.core.costmodel import CostCoefficients, ModelShape, plan_cost
from fedsim.engine.sync import EngineSpec, RunResult, SyncEngine
from fedsim.core.errors import ConfigError, FedsimError
from fedsim.fleet.fleet import Fleet, FleetSpec, sample_fleet
from fedsim.core.plan import ClientPlan, RoundPlans
from fedsim.fleet.profiles import load_profiles
from fedsim.study.scenario import Scenario, load_scenario
from fedsim.study.simulate import simulate

__all__ = [
    "ClientPlan",
    "ConfigError",
    "CostCoefficients",
    "EngineSpec",
    "Fleet",
    "FleetSpec",
    "FedsimError",
    "ModelShape",
    "RoundPlans",
    "RunResult",
    "Scenario",
    "SyncEngine",
    "load_profiles",
    "load_scenario",
    "plan_cost",
    "sample_fleet",
    "simulate",
]
__version__ = "0.1.0"

# torch's OpenMP threads spin at every barrier by default: when other work shares the
# cores, 10 clients' training with 2 torch threads took 64 s of wall and 42 s of CPU,
# against 15 s and 7 s with passive (sleeping) threads (docs/design.md). OpenMP reads
# this when torch is first imported (none of the imports above imports torch); an
# explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
