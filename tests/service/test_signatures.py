"""Webhook signatures: the signed payload, the header, the window, rotation, the key file."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from concordia.service import signatures
from concordia.service.signatures import KeyRing, SecretsError, SignatureError, sign

KEY = "k" * 32
BODY = b'{"id": 1}'


def _header(secret: str, at: int, body: bytes = BODY) -> str:
    return f"t={at},v1={sign(secret, at, body)}"


def test_the_signature_is_an_hmac_sha256_of_the_timestamp_a_dot_and_the_body() -> None:
    expected = hmac.new(KEY.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(KEY, 1_700_000_000, BODY) == expected
    ce = {"ce-type": "a.b", "CE-ID": "x"}
    assert signatures.signed_payload(5, BODY, ce) == b"5.ce-id:x\nce-type:a.b\n\n" + BODY


def test_verify_takes_a_good_signature_within_the_window() -> None:
    ring = KeyRing([KEY])
    assert ring.verify(_header(KEY, 1000), BODY, {}, now=1000 + 299) == 1000
    assert ring.verify(_header(KEY, 1000), BODY, {}, now=1000 - 299) == 1000


@pytest.mark.parametrize(("header", "now", "reason"), [
    (None, 1000, "missing"),
    ("", 1000, "missing"),
    ("v1=abc", 1000, "malformed"),
    ("t=1000", 1000, "malformed"),
    ("t=-5,v1=ab", 1000, "malformed"),
    ("t=1000;v1=ab", 1000, "malformed"),
    ("t=1000," + ",".join(["v1=ab"] * 9), 1000, "malformed"),
    ("t=1000,v1=" + "a" * 3000, 1000, "malformed"),
    (_header(KEY, 1000), 1301, "expired"),
    (_header(KEY, 1000, b"other"), 1000, "mismatch"),
    (_header("x" * 32, 1000), 1000, "mismatch"),
])
def test_verify_refuses_what_is_not_a_good_signature(header: str | None, now: int,
                                                     reason: str) -> None:
    with pytest.raises(SignatureError) as caught:
        KeyRing([KEY]).verify(header, BODY, {}, now=now, tolerance=300)
    assert caught.value.reason == reason
    assert str(caught.value)


def test_every_signature_is_compared_in_constant_time_with_every_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signatures.hmac, "compare_digest", spy)
    ring = KeyRing(["a" * 20, KEY, "c" * 20])
    header = f"t=10,v1={sign(KEY, 10, BODY)},v1={'0' * 64}"
    assert ring.verify(header, BODY, {}, now=10) == 10
    assert len(calls) == 6  # no early exit: 3 keys x 2 signatures


def test_a_secret_too_short_is_refused_at_start() -> None:
    with pytest.raises(SecretsError, match="at least 16"):
        KeyRing(["short"])
    ring = KeyRing.from_environment(environ={"CONCORDIA_WEBHOOK_SECRETS": f"{KEY}, {'z' * 16}"})
    assert len(ring.keys()) == 2
    with pytest.raises(SignatureError) as caught:
        KeyRing().verify("t=1,v1=ab", BODY, {}, now=1)
    assert caught.value.reason == "unconfigured"


def test_the_key_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text(f"# rotated monthly\n{KEY}\n")
    ring = KeyRing(path=str(path))
    new = "n" * 40
    assert ring.verify(_header(KEY, 50), BODY, {}, now=50) == 50
    path.write_text(f"{KEY}\n{new}  # the next one\n")
    assert ring.verify(_header(new, 50), BODY, {}, now=50) == 50
    path.write_text(f"{new}\n")
    with pytest.raises(SignatureError):
        ring.verify(_header(KEY, 50), BODY, {}, now=50)
    path.write_text("tiny\n")  # a mistake while serving: the keys read last stay
    with capture_logs() as logs:
        assert ring.keys() == (new.encode(),)
    assert "at least 16" in logs[0]["error"]
    path.unlink()
    assert ring.keys() == (new.encode(),)
    with pytest.raises(SecretsError, match="No such file"):  # at start: refused
        KeyRing(path=str(tmp_path / "missing"))


@pytest.mark.parametrize("header", [
    f"t=1000,v1={sign(KEY, 1000, BODY)}é",    # valid hex, then a non-ASCII letter
    f"t=1000,v1={sign(KEY, 1000, BODY)[:-2]}zz",  # not hex
    "t=1000,v1=",
    "t=\u0661\u0660\u0660\u0660,v1=ab",  # digits, but Arabic-Indic ones
])
def test_a_signature_header_that_is_not_ascii_hex_is_malformed(header: str) -> None:
    with pytest.raises(SignatureError) as caught:
        KeyRing([KEY]).verify(header, BODY, {}, now=1000)
    assert caught.value.reason == "malformed"


def test_a_rotated_key_of_the_same_length_and_mtime_takes_effect(tmp_path: Path) -> None:
    import os

    path = tmp_path / "secrets"
    old, new = "a" * 32, "b" * 32
    path.write_text(f"{old}\n")
    ring = KeyRing(path=str(path))
    assert ring.verify(_header(old, 50), BODY, {}, now=50) == 50
    stat = path.stat()
    path.write_text(f"{new}\n")  # the same size...
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...and the old mtime
    assert path.stat().st_mtime_ns == stat.st_mtime_ns
    assert ring.verify(_header(new, 50), BODY, {}, now=50) == 50
    with pytest.raises(SignatureError) as caught:
        ring.verify(_header(old, 50), BODY, {}, now=50)
    assert caught.value.reason == "mismatch"


def test_standard_webhooks_secrets_share_the_ring_each_for_its_own_scheme() -> None:
    import base64

    key = bytes(range(32))
    ring = KeyRing([KEY, "whsec_" + base64.b64encode(key).decode()])
    assert ring.keys() == (KEY.encode(),)
    assert ring.all().standard == (key,)
    unpadded = "whsec_" + base64.b64encode(key).decode().rstrip("=")
    assert KeyRing([unpadded]).all().standard == (key,)
    with pytest.raises(SecretsError, match="at least 24"):
        KeyRing(["whsec_" + base64.b64encode(b"short").decode()])
    with pytest.raises(SecretsError, match="not base64"):
        KeyRing(["whsec_not*base64*at*all*0123456789"])


def test_a_change_its_stat_does_not_show_is_taken_within_the_recheck_interval(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from concordia.service import watched

    path = tmp_path / "secrets"
    old, new = "a" * 32, "b" * 32
    path.write_text(f"{old}\n")
    ring = KeyRing(path=str(path))
    # A file system that shows nothing of the rewrite (a coarse clock, a copy keeping
    # times): the stat stays the same...
    monkeypatch.setattr(watched.WatchedFile, "_stamp", lambda self: (1, 2, 3))
    monkeypatch.setattr(watched, "RECHECK", 0.05)
    ring.keys()
    path.write_text(f"{new}\n")
    assert ring.keys() == (old.encode(),)  # ...so until the interval has passed
    time.sleep(0.06)
    assert ring.keys() == (new.encode(),)  # the content decides
