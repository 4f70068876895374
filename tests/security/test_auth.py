"""Token extraction, the first auth message and JWTAuthenticator: no sockets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt
import pytest

from service.auth import (
    JWTAuthenticator,
    default_principal_key,
    extract_token,
    parse_auth_message,
    token_from_authorization,
    token_from_subprotocols,
)
from service.errors import AuthenticationFailed, ConnectionRefused
from service.handshake import Handshake, select_subprotocol
from tests.security.helpers import SECRET, HandshakeSocket, hs_token, rs_token, rsa_keys


def handshake(
    headers: list[tuple[str, str]] | None = None,
    subprotocols: tuple[str, ...] = (),
    query: str = "",
) -> Handshake:
    return Handshake.of(
        HandshakeSocket(headers=headers or [], subprotocols=subprotocols, query=query)
    )


# -- handshake and extraction ------------------------------------------------------


def test_handshake_from_scope() -> None:
    hs = handshake(
        [("Origin", "https://a"), ("X-Dup", "1"), ("X-Dup", "2")],
        ("envelope.v1",),
        "a=1&token=t%2Bx",
    )
    assert hs.header("origin") == "https://a"
    assert hs.header("x-dup") is None and hs.header_count("X-Dup") == 2
    assert hs.subprotocols == ("envelope.v1",)
    assert hs.query("token") == "t+x" and hs.query("missing") is None
    assert hs.client_host == "10.0.0.1" and hs.path == "/ws"
    assert Handshake.of(object()) == Handshake()


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer   abc", "abc"),
        ("BEARER abc", "abc"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        ("Bearer a b", None),
        ("", None),
        (None, None),
    ],
)
def test_token_from_authorization(value: str | None, token: str | None) -> None:
    assert token_from_authorization(value) == token


def test_token_from_subprotocols() -> None:
    assert token_from_subprotocols(["envelope.v1", "bearer.abc.def"]) == "abc.def"
    assert token_from_subprotocols(["envelope.v1"]) is None
    assert token_from_subprotocols(["bearer."]) is None


def test_extraction_order_and_query_opt_in() -> None:
    both = handshake(
        [("authorization", "Bearer from-header")], ("bearer.from-proto",), "token=from-query"
    )
    assert extract_token(both) == "from-header"
    assert extract_token(both, header=False) == "from-proto"
    assert extract_token(both, header=False, subprotocol_prefix=None) is None  # query is opt-in
    assert (
        extract_token(both, header=False, subprotocol_prefix=None, query_param="token")
        == "from-query"
    )


def test_ambiguous_authorization_is_refused_not_skipped() -> None:
    with pytest.raises(AuthenticationFailed, match="several"):
        extract_token(handshake([("authorization", "Bearer a"), ("authorization", "Bearer b")]))
    with pytest.raises(AuthenticationFailed, match="not a bearer"):
        extract_token(handshake([("authorization", "Basic x")], ("bearer.y",)))


def test_never_select_the_token_subprotocol() -> None:
    assert select_subprotocol(["bearer.abc", "envelope.v1"]) == "envelope.v1"
    assert select_subprotocol(["bearer.abc"]) is None
    assert select_subprotocol(["bearer.abc"], supported=["bearer.abc"]) is None
    assert select_subprotocol(["graphql-ws"]) is None


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ('{"type":"auth","data":{"token":"abc"}}', "abc"),
        ('{"type":"auth","token":"abc"}', "abc"),
    ],
)
def test_auth_message(text: str, token: str) -> None:
    assert parse_auth_message(text) == token


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"type":"ping"}',
        '{"type":"auth"}',
        '{"type":"auth","data":{"token":""}}',
        '{"type":"auth","data":{"token":42}}',
        '{"type":"auth","data":{"token":"' + "x" * 20_000 + '"}}',
    ],
)
def test_bad_auth_message(text: str) -> None:
    with pytest.raises(AuthenticationFailed):
        parse_auth_message(text)


def test_principal_key() -> None:
    class User:
        id = 7

    assert default_principal_key({"sub": "alice", "x": 1}) == "alice"
    assert default_principal_key(User()) == "7"
    assert default_principal_key("bob") == "bob"


def test_authentication_failed_is_a_refusal_with_1008() -> None:
    error = AuthenticationFailed("token expired")
    assert isinstance(error, ConnectionRefused)
    assert error.code == 1008 and error.reason == "token expired"


# -- JWT ---------------------------------------------------------------------------


async def test_hs256_from_header_subprotocol_and_opt_in_query() -> None:
    auth = JWTAuthenticator(key=SECRET, query_param="token")
    token = hs_token("alice", role="viewer")
    for socket in (
        HandshakeSocket(headers=[("Authorization", f"Bearer {token}")]),
        HandshakeSocket(subprotocols=["envelope.v1", f"bearer.{token}"]),
        HandshakeSocket(query=f"token={token}"),
    ):
        claims = await auth(socket)
        assert claims is not None and claims["sub"] == "alice" and claims["role"] == "viewer"
    with pytest.raises(AuthenticationFailed, match="required"):
        await JWTAuthenticator(key=SECRET)(HandshakeSocket(query=f"token={token}"))


async def test_rs256_with_a_public_key() -> None:
    auth = JWTAuthenticator(key=rsa_keys()[1], algorithms=["RS256"])
    claims = await auth(HandshakeSocket(headers=[("authorization", f"Bearer {rs_token('bob')}")]))
    assert claims is not None and claims["sub"] == "bob"
    with pytest.raises(AuthenticationFailed, match="invalid token"):
        auth.verify(hs_token("bob"))  # an HS256 token is not accepted by an RS256 authenticator


def scoped(*, exp_in: float = 300, key: str = SECRET, **claims: Any) -> str:
    """A token with the audience and issuer the tests' authenticator expects."""
    return hs_token(exp_in=exp_in, key=key, **{"aud": "dashboard", "iss": "issuer", **claims})


# Tokens are made when the test runs, not when it is collected: a token made at
# collection with five minutes to live has expired by the time a slow suite gets here.
@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: scoped(exp_in=-60), "token expired"),
        (lambda: scoped(key="another-secret-of-at-least-32-bytes!!"), "invalid token"),
        (lambda: scoped(nbf=4_000_000_000), "token not yet valid"),
        (lambda: scoped(aud="other"), "token audience not accepted"),
        (lambda: scoped(iss="mallory"), "token issuer not accepted"),
        (hs_token, "lacks the 'iss' claim"),
        (lambda: "not-a-jwt", "invalid token"),
        (
            lambda: jwt.encode({"sub": "a", "exp": 4_000_000_000}, key="", algorithm="none"),
            "invalid token",
        ),
        (lambda: jwt.encode({"sub": "a"}, SECRET, algorithm="HS256"), "lacks the 'exp' claim"),
        (
            lambda: jwt.encode({"exp": 4_000_000_000}, SECRET, algorithm="HS256"),
            "lacks the 'sub' claim",
        ),
    ],
    ids=[
        "expired",
        "other-key",
        "not-yet-valid",
        "audience",
        "issuer",
        "no-iss",
        "garbage",
        "alg-none",
        "no-exp",
        "no-sub",
    ],
)
def test_bad_tokens_are_refused_with_a_reason(make: Callable[[], str], reason: str) -> None:
    token = make()
    auth = JWTAuthenticator(key=SECRET, audience="dashboard", issuer="issuer")
    with pytest.raises(AuthenticationFailed) as caught:
        auth.verify(token)
    assert reason in caught.value.reason
    assert token not in str(caught.value)


def test_audience_and_issuer_accepted_when_right() -> None:
    auth = JWTAuthenticator(key=SECRET, audience="dashboard", issuer="issuer")
    assert auth.verify(hs_token(aud="dashboard", iss="issuer"))["sub"] == "alice"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"key": "short"}, "at least 32 bytes"),
        ({"key": SECRET, "algorithms": []}, "at least one"),
        ({"key": SECRET, "algorithms": ["none"]}, "unsupported"),
        ({"key": SECRET, "algorithms": ["HS256", "RS256"]}, "do not mix"),
        ({"key": SECRET, "message_timeout": 0}, "positive"),
    ],
)
def test_unsafe_configuration_is_refused(options: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        JWTAuthenticator(**options)  # type: ignore[arg-type]


async def test_first_message_path() -> None:
    auth = JWTAuthenticator(key=SECRET, message_timeout=1.0)
    assert await auth(HandshakeSocket()) is None  # no token yet: wait for the message
    claims = await auth.authenticate_message(
        HandshakeSocket(), '{"type":"auth","data":{"token":"' + hs_token("carol") + '"}}'
    )
    assert claims["sub"] == "carol"
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate_message(HandshakeSocket(), '{"type":"auth","data":{"token":"x"}}')
