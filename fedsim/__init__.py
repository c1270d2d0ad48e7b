"""fedsim: discrete-event simulation of federated fine-tuning on device fleets."""

from fedsim.costmodel import CostCoefficients, ModelShape, plan_cost
from fedsim.engine import EngineSpec, RunResult, SyncEngine
from fedsim.errors import ConfigError, FedsimError
from fedsim.fleet import Fleet, FleetSpec, sample_fleet
from fedsim.plan import ClientPlan, RoundPlans
from fedsim.profiles import load_profiles
from fedsim.scenario import Scenario, load_scenario
from fedsim.simulate import simulate

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
