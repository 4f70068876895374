"""Origin normalisation and the allow-list: data in, verdict out."""

from __future__ import annotations

import pytest

from service.origin import OriginPolicy, normalize_origin


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("https://example.com", "https://example.com"),
        ("HTTPS://Example.COM", "https://example.com"),
        ("https://example.com/", "https://example.com"),
        ("https://example.com:443", "https://example.com"),
        ("http://example.com:80", "http://example.com"),
        ("http://example.com:443", "http://example.com:443"),
        ("https://example.com:8443", "https://example.com:8443"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
        (" https://example.com ", "https://example.com"),
    ],
)
def test_normalisation(raw: str, normalised: str) -> None:
    assert normalize_origin(raw) == normalised


@pytest.mark.parametrize(
    "raw",
    [
        "null",
        "NULL",
        "",
        "example.com",
        "https://",
        "https://user:pw@example.com",
        "https://example.com@evil.org",
        "https://example.com/path",
        "https://example.com?x=1",
        "https://example.com#frag",
        "https://example.com:99999",
        "https://example.com:abc",
        "https://exa mple.com",
        "https://example.com\\@evil.org",
        "https://ex%61mple.com",
        "https://-bad-.com",
        "https://example.com, https://evil.org",
    ],
)
def test_not_an_origin(raw: str) -> None:
    assert normalize_origin(raw) is None


def test_allow_list_is_exact_after_normalisation() -> None:
    policy = OriginPolicy.create(["https://Example.com/", "http://localhost:5173"])
    assert policy.allowed == {"https://example.com", "http://localhost:5173"}
    for ok in ("https://example.com", "https://EXAMPLE.com:443", "http://localhost:5173"):
        assert policy.check([ok]) is None, ok
    for bad in (
        "https://example.com.evil.org",
        "https://evil.org",
        "https://sub.example.com",
        "https://evilexample.com",
        "http://example.com",  # other scheme
        "https://example.com:8443",  # other port
        "http://localhost:5174",
        "https://user@example.com",
        "null",
        "garbage",
    ):
        assert policy.check([bad]) == "origin not allowed", bad


def test_missing_and_repeated_origin() -> None:
    lenient = OriginPolicy.create(["https://example.com"], allow_missing=True)
    strict = OriginPolicy.create(["https://example.com"], allow_missing=False)
    assert lenient.check([]) is None
    assert strict.check([]) == "origin required"
    both = ["https://example.com", "https://example.com"]
    assert lenient.check(both) == "origin not allowed"


@pytest.mark.parametrize("entry", ["*", "null", "example.com", "https://example.com/app"])
def test_bad_configuration_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        OriginPolicy.create([entry])


def test_a_single_string_is_not_a_list() -> None:
    with pytest.raises(ValueError, match="collection"):
        OriginPolicy.create("https://example.com")
