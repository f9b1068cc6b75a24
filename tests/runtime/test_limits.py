"""Per-connection budgets of the connector fleet (connectors/limits.py), on a fixed clock."""

from __future__ import annotations

import httpx
import pytest

from ledgerflow.connectors.limits import ConnectionLimits, Throttled, vendor_limits


def _limits(now: list[float], **options: object) -> ConnectionLimits:
    return ConnectionLimits("xero-a", "xero", vendor_limits("xero", options), max_wait=0.5, clock=lambda: now[0])


def test_vendor_limits_and_overrides() -> None:
    xero = vendor_limits("xero", {})
    assert (xero.per_minute, xero.concurrency, xero.per_day) == (60, 5, 5000)
    assert vendor_limits("quickbooks", {}).per_day is None
    own = vendor_limits("xero", {"rate_limit_per_minute": 120, "max_concurrency": 2, "daily_limit": 10})
    assert (own.per_minute, own.concurrency, own.per_day) == (120, 2, 10)


async def test_the_bucket_allows_its_burst_then_refuses_a_turn_too_far_away() -> None:
    now = [1_000.0]
    limits = _limits(now)
    for _ in range(5):  # burst = Xero's 5 concurrent calls
        await limits.before()
    with pytest.raises(Throttled) as refused:
        await limits.before()
    assert refused.value.reason == "local_rate"
    assert refused.value.retry_after == pytest.approx(1.0)
    now[0] += 1.0  # one interval (60/min) later a turn is free again
    await limits.before()


async def test_the_daily_quota_and_what_the_erp_says() -> None:
    now = [1_000.0]
    limits = _limits(now, daily_limit=2, rate_limit_per_minute=6000)
    await limits.before()
    await limits.before()
    assert limits.day_spent()
    with pytest.raises(Throttled):
        await limits.before()

    other = _limits(now, rate_limit_per_minute=6000)
    request = httpx.Request("GET", "https://api.xero.com/api.xro/2.0/Organisation")
    other.after(httpx.Response(200, headers={"X-DayLimit-Remaining": "0"}, request=request))
    assert other.day_spent()
    third = _limits(now, rate_limit_per_minute=6000)
    third.after(httpx.Response(429, headers={"Retry-After": "30", "X-Rate-Limit-Problem": "minute"}, request=request))
    wait, reason = third.blocked()
    assert (round(wait), reason) == (30, "minute")
    assert not third.day_spent()


def test_records_deferred_for_rate_get_turns_one_interval_apart() -> None:
    now = [1_000.0]
    limits = _limits(now)
    first = limits.slot(2.0)
    assert first == 1_002.0
    assert limits.slot(0.0) == 1_003.0, "the next one queues behind, a token later"
    assert limits.queued() == 3.0
