"""Rate-limit buckets and the CSP's per-page LiveKit origin."""

from __future__ import annotations

from web.security import TokenBucket, connect_origins, content_security_policy


def test_bucket_allows_a_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(burst=3, rate=2.0)
    assert [bucket.allow("ip", now=100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.allow("ip", now=100.4) is False  # 0.8 of a token
    assert bucket.allow("ip", now=100.6) is True
    assert bucket.allow("other", now=100.6) is True  # per key
    assert [bucket.allow("ip", now=200.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_memory_stays_bounded() -> None:
    bucket = TokenBucket(burst=1, rate=1.0, max_keys=100)
    for i in range(1000):
        bucket.allow(f"10.0.{i // 256}.{i % 256}", now=float(i))
    assert len(bucket._buckets) <= 100


def test_livekit_origin_cannot_inject_policy() -> None:
    assert connect_origins("wss://room.livekit.cloud/rtc?x=1") == [
        "wss://room.livekit.cloud", "https://room.livekit.cloud"]
    for evil in ("wss://a.b; script-src *", "javascript:alert(1)", "wss://a b", "wss://",
                 "wss://a.b'unsafe-inline'", "file:///etc/passwd"):
        assert connect_origins(evil) == [], evil
    csp = content_security_policy(connect_origins("wss://a.b; script-src *"))
    assert csp.count("script-src") == 1 and "script-src 'self'" in csp
