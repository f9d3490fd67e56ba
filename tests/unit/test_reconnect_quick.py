"""The quick first retry of a camera that was healthy (sources._reconnect.Backoff)."""

import pytest

from vidflow.sources._reconnect import DEFAULT_BACKOFF, HEALTHY_S, QUICK_RETRY, Backoff


def _delays(b, n, healthy_for):
    return [b.next(healthy_for=healthy_for)] + [b.next() for _ in range(n - 1)]


def test_a_healthy_camera_is_retried_quickly_then_on_the_usual_schedule():
    b = Backoff(DEFAULT_BACKOFF)
    d = _delays(b, 6, HEALTHY_S)
    assert d == pytest.approx([QUICK_RETRY, 0.5 - QUICK_RETRY, 1.0, 2.0, 4.0, 5.0])
    # the retries after the quick one are at the usual times from the loss: 0.5, 1.5, 3.5 ... s
    assert [sum(d[:k + 1]) for k in range(1, 4)] == pytest.approx([0.5, 1.5, 3.5])
    assert b.failures == 6                       # the quick retry counts for max_retries
    b.reset()
    assert _delays(b, 3, 3600.0) == pytest.approx([QUICK_RETRY, 0.5 - QUICK_RETRY, 1.0])


@pytest.mark.parametrize("healthy_for", [0.0, 2.0, HEALTHY_S - 0.1])
def test_a_camera_that_drops_soon_after_connecting_gets_no_quick_retry(healthy_for):
    b = Backoff(DEFAULT_BACKOFF)
    assert _delays(b, 4, healthy_for) == [0.5, 1.0, 2.0, 4.0]
    b.reset()
    assert _delays(b, 2, healthy_for) == [0.5, 1.0]


def test_only_the_first_retry_of_an_outage_can_be_quick_and_never_slower_than_asked():
    b = Backoff((0.5, 5.0))
    assert b.next() == 0.5 and b.next(healthy_for=HEALTHY_S) == 1.0
    fast = Backoff((0.05, 1.0))                  # an initial already below the quick retry: unchanged
    assert _delays(fast, 3, HEALTHY_S) == [0.05, 0.1, 0.2]
