"""The web login throttle: failures per name and per address in a sliding window."""

from __future__ import annotations

from devmesh.web.auth import LoginThrottle


def _throttle(now: list[float], **kw: float) -> LoginThrottle:
    return LoginThrottle(limit=3, window=60, clock=lambda: now[0], **kw)  # type: ignore[arg-type]


def test_a_name_is_refused_after_the_limit_until_the_window_slides() -> None:
    now = [0.0]
    throttle = _throttle(now)
    for i in range(3):
        assert throttle.retry_after("alice", f"10.0.0.{i}") == 0
        throttle.failed("alice", f"10.0.0.{i}")
        now[0] += 10
    # three failures from three addresses: the name is locked, a fresh address too
    assert throttle.retry_after("Alice", "10.0.0.99") == 60 - 30
    assert throttle.retry_after("bob", "10.0.0.99") == 0
    now[0] = 60  # the first failure left the window
    assert throttle.retry_after("alice", "10.0.0.99") == 0
    throttle.failed("alice", "10.0.0.99")
    assert throttle.retry_after("alice", "10.0.0.98") == 10  # the second one leaves at 70


def test_an_address_is_refused_whatever_names_it_tries() -> None:
    now = [0.0]
    throttle = _throttle(now)
    for name in ("alice", "bob", "carol"):
        throttle.failed(name, "192.0.2.7")
    assert throttle.retry_after("dave", "192.0.2.7") == 60
    assert throttle.retry_after("dave", "192.0.2.8") == 0


def test_a_right_password_clears_the_name_not_the_address() -> None:
    now = [0.0]
    throttle = _throttle(now)
    throttle.failed("alice", "a1")
    throttle.failed("alice", "a2")
    throttle.succeeded("alice")
    throttle.failed("alice", "a3")
    assert throttle.retry_after("alice", "a4") == 0  # one failure since the success
    throttle.failed("eve", "a1")
    throttle.failed("mallory", "a1")
    assert throttle.retry_after("zed", "a1") == 60  # a1 failed three times in all


def test_memory_stays_bounded_under_a_spray_of_names() -> None:
    now = [0.0]
    throttle = _throttle(now, max_keys=100)
    for i in range(1_000):
        throttle.failed(f"user{i}", f"198.51.100.{i % 250}")
        now[0] += 0.01
    assert len(throttle._failures) <= 100
