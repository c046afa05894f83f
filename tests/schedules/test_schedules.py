"""Schedules against their formulas (Zhu & Gupta cubic, linear, exponential, constant, IMP levels) and their config."""

from __future__ import annotations

import math

import pytest

from prunekit.errors import PrunekitError
from prunekit.registry import SCHEDULES
from prunekit.schedules import (
    ScheduleConfig, constant, cubic, exponential, imp_level, imp_rounds, linear, make_schedule, polynomial,
    update_steps,
)


def test_every_kind_is_registered():
    assert {"constant", "linear", "cubic", "polynomial", "exponential", "imp"} <= set(SCHEDULES.names())


@pytest.mark.parametrize("step", [10, 13, 20, 47, 99])
def test_cubic_is_zhu_gupta(step):
    s_i, s_f, t0, n, dt = 0.1, 0.9, 10, 9, 10  # end = t0 + n * dt = 100
    t_q = t0 + (step - t0) // dt * dt
    expected = s_f + (s_i - s_f) * (1 - (t_q - t0) / (n * dt)) ** 3
    assert cubic(step, initial=s_i, final=s_f, begin=t0, end=t0 + n * dt, frequency=dt) == pytest.approx(expected)


def test_cubic_before_begin_and_after_end():
    kw = dict(initial=0.2, final=0.8, begin=5, end=50)
    assert cubic(0, **kw) == 0.2 and cubic(4, **kw) == 0.2
    assert cubic(5, **kw) == pytest.approx(0.2)
    assert cubic(50, **kw) == 0.8 and cubic(10_000, **kw) == 0.8


def test_polynomial_power_and_staircase():
    kw = dict(final=0.5, begin=0, end=100, frequency=25)
    assert polynomial(30, power=2.0, **kw) == pytest.approx(0.5 - 0.5 * (1 - 0.25) ** 2)
    assert polynomial(30, power=2.0, **kw) == polynomial(49, power=2.0, **kw)  # constant between updates
    assert polynomial(40, power=3.0, **kw) == cubic(40, **kw)


def test_linear_and_monotone():
    vals = [linear(t, initial=0.1, final=0.7, begin=0, end=60) for t in range(70)]
    assert vals[30] == pytest.approx(0.4)
    assert all(a <= b for a, b in zip(vals, vals[1:]))


def test_exponential_prunes_the_same_share_of_what_remains():
    kw = dict(final=0.9, begin=0, end=40, frequency=10)
    dens = [1 - exponential(t, **kw) for t in (0, 10, 20, 30, 40)]
    ratios = [b / a for a, b in zip(dens, dens[1:])]
    assert ratios == pytest.approx([0.1 ** 0.25] * 4)
    assert exponential(40, **kw) == 0.9


def test_constant_is_one_shot_at_begin():
    assert constant(2, final=0.6, begin=3) == 0.0
    assert constant(3, final=0.6, begin=3) == 0.6


def test_imp_levels():
    assert [imp_level(r, rate=0.2) for r in range(4)] == pytest.approx([0, 0.2, 0.36, 0.488])
    assert imp_level(50, rate=0.2, final=0.9) == 0.9
    r = imp_rounds(0.9, 0.2)
    assert imp_level(r, rate=0.2) >= 0.9 > imp_level(r - 1, rate=0.2)
    assert r == math.ceil(math.log(0.1) / math.log(0.8))


def test_update_steps():
    assert update_steps(0, 10, 4) == [0, 4, 8, 10]
    assert update_steps(5, 5, 3) == [5]


@pytest.mark.parametrize(("kw", "match"), [
    (dict(final=1.0, end=10), r"final sparsity must be in \[0, 1\)"),
    (dict(initial=0.5, final=0.2, end=10), "exceeds final"),
    (dict(final=0.5, begin=10, end=5), r"end \(5\) must be >= begin \(10\)"),
    (dict(final=0.5, end=10, frequency=0), "frequency must be >= 1"),
])
def test_bad_parameters_raise(kw, match):
    with pytest.raises(PrunekitError, match=match):
        make_schedule("cubic", **kw)


def test_unknown_kind_suggests():
    with pytest.raises(PrunekitError, match="unknown schedule 'cubik'.*cubic"):
        make_schedule("cubik", final=0.5, end=10)
    with pytest.raises(ValueError, match="unknown schedule kind 'cubik'.*cubic"):
        ScheduleConfig(kind="cubik")


def test_config_defaults_to_cubic_over_three_quarters():
    cfg = ScheduleConfig()
    fn = cfg.build(0.9, total_steps=200)
    assert cfg.resolved_end(200) == 150
    assert fn(150) == 0.9 and fn(149) < 0.9
    assert fn(60) == pytest.approx(cubic(60, final=0.9, end=150))
    with pytest.raises(PrunekitError, match="schedule end is not set"):
        cfg.build(0.9)
    with pytest.raises(ValueError, match="Extra inputs"):
        ScheduleConfig(knd="cubic")
