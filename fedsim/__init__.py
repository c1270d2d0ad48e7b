"""fedsim: discrete-event simulation of federated fine-tuning on device fleets."""

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
