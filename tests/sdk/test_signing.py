import pytest

from chutes import signing


def test_round_trip_and_tamper_detection() -> None:
    header = signing.sign("s3cret", "POST", "/echo", b'{"a":1}', timestamp=1_000_000)
    parsed = signing.verify("s3cret", header, "POST", "/echo", b'{"a":1}', now=1_000_010)
    assert parsed.timestamp == 1_000_000
    for secret, method, path, body in [
        ("other", "POST", "/echo", b'{"a":1}'),
        ("s3cret", "GET", "/echo", b'{"a":1}'),
        ("s3cret", "POST", "/echo2", b'{"a":1}'),
        ("s3cret", "POST", "/echo", b'{"a":2}'),
    ]:
        with pytest.raises(signing.SignatureError) as err:
            signing.verify(secret, header, method, path, body, now=1_000_010)
        assert err.value.status == 403


def test_missing_is_401_and_stale_is_403() -> None:
    with pytest.raises(signing.SignatureError) as missing:
        signing.verify("s", None, "POST", "/x", b"")
    assert missing.value.status == 401
    header = signing.sign("s", "POST", "/x", b"", timestamp=1000)
    with pytest.raises(signing.SignatureError, match="stale") as stale:
        signing.verify("s", header, "POST", "/x", b"", now=1061)
    assert stale.value.status == 403


@pytest.mark.parametrize("header", ["garbage", "t=abc,v1=00", "t=1,v1=zz", "t=1,t=2,v1=" + "0" * 64, "v1=" + "0" * 64])
def test_malformed_headers_are_refused(header: str) -> None:
    with pytest.raises(signing.SignatureError) as err:
        signing.parse(header)
    assert err.value.status == 403
