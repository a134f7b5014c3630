"""Stopping a model pass between batches (:mod:`safety.interrupt`), on the tiny model: once
the callback says stop, the next batch raises ``Interrupted`` instead of running; the
callback is asked at most once per interval; outside ``stop_when`` nothing is checked."""

from __future__ import annotations

import pytest

from safety import interrupt
from safety.generation import GenerationSettings, generate

PROMPTS = [f"Say {n}." for n in range(6)]
ONE_AT_A_TIME = GenerationSettings(max_new_tokens=2, batch_size=1)


class Asked:
    """A "should stop" callback that says yes from its ``stop_at``-th call on."""

    def __init__(self, stop_at: int) -> None:
        self.calls, self.stop_at = 0, stop_at

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls >= self.stop_at


def test_generation_stops_at_the_batch_after_the_callback_says_stop(load_tiny):
    model, tokenizer = load_tiny()
    asked = Asked(stop_at=3)
    with interrupt.stop_when(asked, every_s=0), pytest.raises(interrupt.Interrupted):
        generate(model, tokenizer, PROMPTS, ONE_AT_A_TIME)
    assert asked.calls == 3  # asked before each batch: two batches ran, the third did not


def test_the_callback_is_asked_at_most_once_per_interval(load_tiny):
    model, tokenizer = load_tiny()
    asked = Asked(stop_at=2)
    with interrupt.stop_when(asked, every_s=3600):
        outputs = generate(model, tokenizer, PROMPTS, ONE_AT_A_TIME)
    assert asked.calls == 1  # the first check asks; the next within the hour do not
    assert len(outputs) == len(PROMPTS)


def test_outside_stop_when_nothing_is_checked():
    interrupt.check()  # no callback: no error
    with interrupt.stop_when(lambda: True):
        with pytest.raises(interrupt.Interrupted):
            interrupt.check()
    interrupt.check()  # the callback is gone with its block
