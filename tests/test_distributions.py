"""Profile distributions: shapes, clipping, seeding, means, and rejected parameters."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from pydantic import BaseModel, TypeAdapter, ValidationError

from fedsim.fleet.distributions import Choice, Constant, Dist, LogNormal, Normal, Uniform

DIST = TypeAdapter(Dist)

SPECS = [
    5,
    2.5,
    {"dist": "constant", "value": 3},
    {"dist": "uniform", "low": 1, "high": 3},
    {"dist": "normal", "mean": 10, "std": 2},
    {"dist": "lognormal", "median": 4, "sigma": 0.5},
    {"dist": "choice", "values": [1, 2, 4], "weights": [0.5, 0.25, 0.25]},
    {"dist": "choice", "values": [1, 2, 3]},
]


@pytest.mark.parametrize("spec", SPECS)
def test_sample_shape_and_dtype(spec):
    d = DIST.validate_python(spec)

    x = d.sample(np.random.default_rng(0), 1000)

    assert x.shape == (1000,)
    assert x.dtype == np.float64
    assert d.sample(np.random.default_rng(0), 0).shape == (0,)


@pytest.mark.parametrize("spec", SPECS)
def test_same_seed_same_samples(spec):
    d = DIST.validate_python(spec)

    a = d.sample(np.random.default_rng(42), 500)
    b = d.sample(np.random.default_rng(42), 500)

    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("spec", SPECS[3:])
def test_different_seed_different_samples(spec):
    d = DIST.validate_python(spec)

    assert not np.array_equal(d.sample(np.random.default_rng(1), 500), d.sample(np.random.default_rng(2), 500))


@pytest.mark.parametrize("spec", SPECS)
def test_large_sample_mean_near_mean(spec):
    d = DIST.validate_python(spec)

    x = d.sample(np.random.default_rng(7), 200_000)

    # 200k samples: the standard error is < 0.5% of these means' scales.
    assert x.mean() == pytest.approx(d.mean(), rel=0.01)


@pytest.mark.parametrize("spec", SPECS)
def test_samples_stay_within_support(spec):
    d = DIST.validate_python(spec)

    x = d.sample(np.random.default_rng(3), 20_000)
    lo, hi = d.support

    assert x.min() >= lo and x.max() <= hi


def test_bare_number_is_a_constant():
    d = DIST.validate_python(7)

    assert isinstance(d, Constant)
    assert d.value == 7.0
    assert d.support == (7.0, 7.0)


def test_bool_is_not_a_number():
    with pytest.raises(ValidationError):
        DIST.validate_python(True)


def test_normal_clipping():
    d = Normal(dist="normal", mean=0, std=10, min=-1, max=2)

    x = d.sample(np.random.default_rng(0), 10_000)

    assert x.min() == -1.0 and x.max() == 2.0
    assert (x == -1.0).mean() > 0.4  # most of the mass is clipped onto the bounds
    assert d.support == (-1.0, 2.0)


def test_lognormal_clipping_and_median():
    d = LogNormal(dist="lognormal", median=10, sigma=1.0, min=2, max=50)

    x = d.sample(np.random.default_rng(0), 100_000)

    assert x.min() == 2.0 and x.max() == 50.0
    assert np.median(x) == pytest.approx(10, rel=0.02)
    assert d.support == (2.0, 50.0)


def test_lognormal_one_sided_clip():
    d = LogNormal(dist="lognormal", median=1, sigma=2.0, max=3)

    x = d.sample(np.random.default_rng(0), 10_000)

    assert x.max() == 3.0
    assert x.min() > 0
    assert d.support == (0.0, 3.0)


def test_normal_mean_alias_round_trips():
    d = DIST.validate_python({"dist": "normal", "mean": 3, "std": 1})

    assert d.mean() == 3
    assert d.model_dump(by_alias=True)["mean"] == 3
    assert DIST.validate_python(d.model_dump(by_alias=True)) == d


def test_choice_weights_are_normalised():
    d = Choice(dist="choice", values=[0, 1], weights=[3, 1])

    x = d.sample(np.random.default_rng(0), 100_000)

    assert set(np.unique(x)) == {0.0, 1.0}
    assert x.mean() == pytest.approx(0.25, abs=0.01)
    assert d.mean() == pytest.approx(0.25)


def test_uniform_degenerate_interval():
    d = Uniform(dist="uniform", low=2, high=2)

    assert np.all(d.sample(np.random.default_rng(0), 10) == 2.0)


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"dist": "uniform", "low": 3, "high": 1}, "low"),
        ({"dist": "normal", "mean": 0, "std": 1, "min": 2, "max": 1}, "min"),
        ({"dist": "lognormal", "median": 5, "sigma": 1, "min": 10, "max": 2}, "min"),
        ({"dist": "normal", "mean": 0, "std": -1}, "greater than or equal"),
        ({"dist": "lognormal", "median": 0, "sigma": 1}, "greater than 0"),
        ({"dist": "lognormal", "median": 1, "sigma": -0.1}, "greater than or equal"),
        ({"dist": "choice", "values": [1, 2], "weights": [1]}, "weights has 1"),
        ({"dist": "choice", "values": [1, 2], "weights": [1, -1]}, "non-negative"),
        ({"dist": "choice", "values": [1, 2], "weights": [0, 0]}, "non-negative"),
        ({"dist": "choice", "values": []}, "at least 1"),
        ({"dist": "uniform", "low": 1, "high": 2, "mode": 1.5}, "Extra inputs"),
        ({"dist": "gamma", "k": 2}, "gamma"),
        ({"median": 3}, "discriminator"),
    ],
)
def test_invalid_parameters_rejected(spec, words):
    with pytest.raises(ValidationError) as info:
        DIST.validate_python(spec)

    assert words in str(info.value)


def test_distributions_are_frozen():
    d = Uniform(dist="uniform", low=0, high=1)

    with pytest.raises(ValidationError):
        d.low = 5


def test_dist_inside_a_model():
    class Holder(BaseModel):
        speed: Dist

    h = Holder.model_validate({"speed": {"dist": "lognormal", "median": 2, "sigma": 0.1}})

    assert isinstance(h.speed, LogNormal)


def test_lognormal_support_never_negative():
    d = LogNormal(dist="lognormal", median=1, sigma=1, min=-1)

    assert d.support[0] >= 0.0


@pytest.mark.parametrize("spec", SPECS)
def test_quantiles_of_uniforms_sample_the_distribution(spec):
    # quantile() is how draws keyed by device sample: the same law as sample()
    d = DIST.validate_python(spec)
    u = np.random.default_rng(1).random(20_000)

    x, y = d.quantile(u), d.sample(np.random.default_rng(2), 20_000)

    assert x.shape == u.shape and x.dtype == np.float64
    assert np.all(np.diff(x[np.argsort(u)]) >= 0)  # non-decreasing in u
    lo, hi = d.support
    assert np.all((x >= lo) & (x <= hi))
    if isinstance(d, Choice):  # the same frequency of every value
        for v in d.values:
            assert abs(np.mean(x == v) - np.mean(y == v)) < 0.02
    elif np.unique(y).size > 1:
        assert stats.ks_2samp(x, y).pvalue > 1e-3


def test_quantiles_are_clipped_like_samples():
    d = LogNormal(dist="lognormal", median=2.0, sigma=1.0, min=1.2, max=10.0)
    x = d.quantile(np.array([1e-12, 0.5, 1 - 1e-12]))
    assert x.tolist() == [1.2, 2.0, 10.0]
