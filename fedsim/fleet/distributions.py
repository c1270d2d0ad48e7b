"""Validated, vectorised probability distributions for profile fields.

A profile field is either a plain number (a constant) or a mapping with a ``dist`` key::

    train_gflops_per_s: {dist: lognormal, median: 15, sigma: 0.6, min: 2, max: 80}
    app_memory_gb: {dist: choice, values: [1.5, 2.0, 3.0], weights: [0.3, 0.5, 0.2]}

Every distribution samples ``n`` values at once from a ``numpy.random.Generator`` passed
in, so a million devices cost one call per field and class.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import numpy as np
from pydantic import BaseModel, BeforeValidator, Field, model_validator
from scipy.special import ndtri

from fedsim.core.configio import Spec

__all__ = ["Dist", "Constant", "Uniform", "Normal", "LogNormal", "Choice", "as_dist"]


class _Dist(BaseModel):
    # Spec's settings; its per-field boolean check cannot run on the discriminator
    # ``dist``, and every other field of a distribution is a number or a list of them.
    model_config = Spec.model_config

    @model_validator(mode="before")
    @classmethod
    def _no_booleans(cls, data):
        if isinstance(data, dict):
            for key, value in data.items():
                if isinstance(value, bool) or (isinstance(value, list) and any(isinstance(v, bool) for v in value)):
                    raise ValueError(f"'{key}' must be a number, not a boolean (true/false)")
        return data
    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        raise NotImplementedError

    def quantile(self, u: np.ndarray) -> np.ndarray:
        """The values at probabilities ``u`` in (0, 1) (the inverse of the distribution
        function, clipped as :meth:`sample` clips): ``quantile`` of uniforms samples the
        distribution, one value per uniform, so a value drawn for one device does not
        depend on what was drawn for others (:class:`fedsim.core.rng.DeviceRandom`)."""
        raise NotImplementedError

    def mean(self) -> float:
        """The distribution's mean (before clipping, for lognormal/normal)."""
        raise NotImplementedError

    @property
    def support(self) -> tuple[float, float]:
        """Smallest and largest value the distribution can produce."""
        raise NotImplementedError

    @property
    def reach(self) -> float:
        """Largest value drawn with a chance above about one in a billion (the top of the
        support when that is finite): what a finite upper bound is checked against."""
        return self.support[1]


class Constant(_Dist):
    """Always ``value``."""

    dist: Literal["constant"] = "constant"
    value: float

    def sample(self, rng, n):
        return np.full(n, self.value, dtype=float)

    def quantile(self, u):
        return np.full(np.shape(u), self.value, dtype=float)

    def mean(self):
        return self.value

    @property
    def support(self):
        return (self.value, self.value)


class _Clipped(_Dist):
    min: float | None = Field(None, description="values below are clipped to this")
    max: float | None = Field(None, description="values above are clipped to this")

    @model_validator(mode="after")
    def _check_bounds(self):
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self

    def _clip(self, x: np.ndarray) -> np.ndarray:
        if self.min is not None or self.max is not None:
            np.clip(x, self.min, self.max, out=x)
        return x


class Uniform(_Dist):
    """Uniform on ``[low, high]``."""

    dist: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _check(self):
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self

    def sample(self, rng, n):
        return rng.uniform(self.low, self.high, size=n)

    def quantile(self, u):
        return self.low + (self.high - self.low) * np.asarray(u, dtype=float)

    def mean(self):
        return 0.5 * (self.low + self.high)

    @property
    def support(self):
        return (self.low, self.high)


class Normal(_Clipped):
    """Normal with ``mean`` and ``std``, optionally clipped to ``[min, max]``."""

    dist: Literal["normal"]
    mean_: float = Field(alias="mean")
    std: float = Field(ge=0)

    def sample(self, rng, n):
        return self._clip(rng.normal(self.mean_, self.std, size=n))

    def quantile(self, u):
        return self._clip(self.mean_ + self.std * ndtri(np.asarray(u, dtype=float)))

    def mean(self):
        return self.mean_

    @property
    def support(self):
        return (-np.inf if self.min is None else self.min, np.inf if self.max is None else self.max)

    @property
    def reach(self):
        with np.errstate(over="ignore"):
            top = float(np.float64(self.mean_) + 6.0 * np.float64(self.std))
        return top if self.max is None else min(top, self.max)


class LogNormal(_Clipped):
    """Log-normal given by its ``median`` and the ``sigma`` of its logarithm.

    Heavy right tails (bandwidth, compute speed) are the norm in device measurements;
    the median is the figure public reports quote.
    """

    dist: Literal["lognormal"]
    median: float = Field(gt=0)
    sigma: float = Field(ge=0)

    def sample(self, rng, n):
        return self._clip(self.median * np.exp(self.sigma * rng.standard_normal(n)))

    def quantile(self, u):
        with np.errstate(over="ignore"):
            return self._clip(self.median * np.exp(self.sigma * ndtri(np.asarray(u, dtype=float))))

    def mean(self):
        return float(self.median * np.exp(0.5 * self.sigma**2))

    @property
    def support(self):
        return (0.0 if self.min is None else max(0.0, self.min), np.inf if self.max is None else self.max)

    @property
    def reach(self):
        with np.errstate(over="ignore"):
            top = float(self.median * np.exp(6.0 * np.float64(self.sigma)))
        return top if self.max is None else min(top, self.max)


class Choice(_Dist):
    """One of ``values`` with probabilities proportional to ``weights`` (equal if absent)."""

    dist: Literal["choice"]
    values: list[float] = Field(min_length=1)
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _check(self):
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError(
                    f"weights has {len(self.weights)} entries but values has {len(self.values)}"
                )
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("weights must be non-negative and not all zero")
        return self

    def _p(self) -> np.ndarray | None:
        if self.weights is None:
            return None
        w = np.asarray(self.weights, dtype=float)
        return w / w.sum()

    def sample(self, rng, n):
        return rng.choice(np.asarray(self.values, dtype=float), size=n, p=self._p())

    def quantile(self, u):
        p = self._p()
        cum = np.cumsum(np.full(len(self.values), 1.0 / len(self.values)) if p is None else p)
        idx = np.minimum(np.searchsorted(cum, np.asarray(u, dtype=float), side="right"), len(self.values) - 1)
        return np.asarray(self.values, dtype=float)[idx]

    def mean(self):
        p = self._p()
        return float(np.average(self.values, weights=p))

    @property
    def support(self):
        return (min(self.values), max(self.values))


def as_dist(value):
    """Let a bare number stand for a :class:`Constant`."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"dist": "constant", "value": value}
    return value


Dist = Annotated[
    Union[Constant, Uniform, Normal, LogNormal, Choice],
    Field(discriminator="dist"),
    BeforeValidator(as_dist),
]
"""A profile field: a number or a ``{dist: ...}`` mapping."""
