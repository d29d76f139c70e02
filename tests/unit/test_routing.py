"""appliance.routing: every reason, in order, with fallbacks; and the breaker."""

from __future__ import annotations

import pytest

from appliance.remotes.breaker import Breaker
from appliance.routing import LOCAL, LocalOption, NoRoute, RemoteOption, route

HERE = LocalOption(installed=True, fits=True, n_ctx=4096, predicted_wait_s=0.0)
GPU = RemoteOption("gpu", "m", max_model_len=32768, saturated=False)
SMALL = RemoteOption("small", "m", max_model_len=2048, saturated=False)
BUSY = RemoteOption("busy", "m", max_model_len=32768, saturated=True)


def test_local_when_nothing_calls_for_a_remote() -> None:
    decision = route(local=HERE, remotes=[GPU], needed_tokens=100)
    assert (decision.target, decision.reason) == (LOCAL, None)


def test_explicit_remote_and_its_absence() -> None:
    decision = route(local=HERE, remotes=[GPU, SMALL], explicit="small")
    assert (decision.target, decision.reason, decision.remote_model) == ("small", "explicit", "m")
    assert decision.fallbacks == ()  # a named remote is not silently replaced
    with pytest.raises(NoRoute, match="remote gone is down"):
        route(local=HERE, remotes=[GPU], explicit="gone")


def test_header_and_policy() -> None:
    assert route(local=HERE, remotes=[GPU], header="always").target == "gpu"
    assert route(local=HERE, remotes=[GPU], header="always").fallbacks == (LOCAL,)
    assert route(local=HERE, remotes=[], header="always").target == LOCAL  # nothing healthy: stay
    missing = LocalOption(installed=False, fits=False, n_ctx=None, predicted_wait_s=0.0)
    assert route(local=missing, remotes=[GPU], header="never").target == LOCAL
    assert route(local=missing, remotes=[GPU], policy="never").target == LOCAL
    assert route(local=HERE, remotes=[GPU], policy="always").reason == "explicit"


def test_capability() -> None:
    missing = LocalOption(installed=False, fits=False, n_ctx=None, predicted_wait_s=0.0)
    too_big = LocalOption(installed=True, fits=False, n_ctx=None, predicted_wait_s=0.0)
    decision = route(local=missing, remotes=[GPU, SMALL])
    assert (decision.target, decision.reason, decision.fallbacks) == ("gpu", "capability", ("small",))
    assert "not installed" in decision.why
    assert "does not fit" in route(local=too_big, remotes=[GPU]).why
    assert route(local=missing, remotes=[]).target == LOCAL  # answered by the local 404


def test_context_goes_where_it_fits() -> None:
    decision = route(local=HERE, remotes=[SMALL, GPU], needed_tokens=8000)
    assert (decision.target, decision.reason) == ("gpu", "context")  # small holds only 2048
    assert decision.fallbacks == (LOCAL,)
    assert route(local=HERE, remotes=[SMALL], needed_tokens=8000).target == LOCAL


def test_load_only_to_a_remote_with_room() -> None:
    queued = LocalOption(installed=True, fits=True, n_ctx=4096, predicted_wait_s=30.0)
    decision = route(local=queued, remotes=[BUSY, GPU], max_queue_wait_s=10)
    assert (decision.target, decision.reason) == ("gpu", "load")
    assert route(local=queued, remotes=[BUSY], max_queue_wait_s=10).target == LOCAL
    assert route(local=queued, remotes=[GPU], max_queue_wait_s=60).target == LOCAL


def test_breaker_opens_half_opens_and_backs_off() -> None:
    now = [0.0]
    breaker = Breaker(threshold=3, base_cooldown_s=5, max_cooldown_s=20, clock=lambda: now[0])
    for _ in range(2):
        breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and not breaker.allows()
    now[0] = 5.0
    assert breaker.state == "half_open" and breaker.allows()
    breaker.failure()  # the probe failed: twice as long
    assert breaker.state == "open" and breaker.retry_in_s() == 10
    now[0] = 15.0
    breaker.failure()
    now[0] = 30.0
    breaker.failure()
    assert breaker.cooldown_s == 20  # capped
    breaker.success()
    assert breaker.state == "closed" and breaker.failures == 0


def test_breaker_failures_while_it_cools_down_do_not_extend_it_and_opening_is_told() -> None:
    now = [0.0]
    opened: list[float] = []
    breaker = Breaker(
        threshold=3, base_cooldown_s=5, clock=lambda: now[0], on_open=lambda: opened.append(now[0])
    )
    for _ in range(3):
        breaker.failure()
    assert breaker.state == "open" and opened == [0.0]
    for second in (1.0, 2.0, 3.0, 4.0):  # probes failing every second while it cools down
        now[0] = second
        breaker.failure()
    assert breaker.retry_in_s() == 1.0 and opened == [0.0]
    now[0] = 5.0
    breaker.failure()  # the half-open try
    assert breaker.retry_in_s() == 10 and opened == [0.0, 5.0]


def test_a_request_the_model_here_cannot_serve_goes_to_a_remote_that_can() -> None:
    blind = LocalOption(installed=True, fits=True, n_ctx=4096, predicted_wait_s=0.0, lacks="read images")
    eyes = RemoteOption("gpu", "m", None, saturated=False)
    decision = route(local=blind, remotes=[eyes])
    assert (decision.target, decision.reason, decision.fallbacks) == ("gpu", "capability", ())
    assert "cannot read images here" in decision.why
    assert route(local=blind, remotes=[]).target == LOCAL  # refused here, in the dialect's shape
