"""The larger fidelity set and the interval that decides a default precision (``bench.run --fidelity-only``)."""

from __future__ import annotations

from bench.prompts import FIDELITY_LARGE
from bench.run import REPLY_TOKENS, agreement_difference


def test_the_larger_set_can_score_enough_positions() -> None:
    assert len(FIDELITY_LARGE) >= 50
    assert len(FIDELITY_LARGE) * REPLY_TOKENS >= 3000
    rendered = [str(m) for m in FIDELITY_LARGE]
    assert len(set(rendered)) == len(rendered), "a prompt is repeated"


def test_equal_engines_differ_by_nothing() -> None:
    per_prompt = [60, 64, 50, 63] * 15
    diff, low, high = agreement_difference(per_prompt, per_prompt, [64] * 60)
    assert (diff, low, high) == (0.0, 0.0, 0.0)


def test_an_engine_worse_on_every_prompt_is_measurably_worse() -> None:
    other = [60, 64, 50, 63] * 15
    worse = [n - 3 for n in other]
    diff, low, high = agreement_difference(worse, other, [64] * 60)
    assert diff == -300 / 64
    assert low <= diff <= high < 0


def test_one_unlucky_prompt_is_not_a_measurable_difference() -> None:
    # 3 positions lost on one prompt of 60: the interval reaches zero (it is not "worse" on the evidence).
    other = [60, 64, 50, 63] * 15
    engine = [other[0] - 3, *other[1:]]
    diff, low, high = agreement_difference(engine, other, [64] * 60)
    assert low < diff < 0 <= high
