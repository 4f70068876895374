"""Who a client is and what it may subscribe to.

The service takes two pluggable callables (see :class:`~service.WebSocketService`):

``authenticate(websocket) -> principal | None``
    Awaited once per connection before the handshake completes. Return the
    principal (anything: a claims dict, a user object), ``None`` to refuse, or
    raise :class:`~service.errors.AuthenticationFailed` to refuse with a precise
    reason. An authenticator that also accepts a first ``auth`` message (see
    :class:`FirstMessageAuthenticator`) returns ``None`` when the handshake
    carried no credential; the service then completes the handshake and waits at
    most ``message_timeout`` seconds for ``{"type": "auth", "data": {"token": ...}}``.

``authorize(principal, topic, action) -> bool`` (sync or async)
    Asked before every subscription, whether the client or the server asked for
    it; ``action`` is ``"subscribe"``.

Credentials that expire (see :class:`ExpiringAuthenticator`)
    ``authenticate.expires_at(principal) -> float | None`` says when a principal's
    credentials stop being valid (Unix seconds; ``None``: never). Without that
    method the ``exp`` claim of a claims mapping is used (:func:`claims_expiry`).
    The service closes a connection at that moment (1008 ``token expired``)
    unless the client sent a fresh token in an ``auth`` message first, which
    ``authenticate.authenticate_message(websocket, text)`` verifies.

:class:`JWTAuthenticator` is the ready implementation (PyJWT, HS* or RS*/ES*/PS*),
reading the token from, in order: the ``Authorization: Bearer`` header, a
``bearer.<token>`` subprotocol entry, the query string (only when an operator opts
in: query strings end up in access logs, see :mod:`service.redact`) and, when
enabled, a first ``auth`` message. The extraction functions are sans I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import orjson

from .errors import AuthenticationFailed
from .handshake import TOKEN_SUBPROTOCOL_PREFIX, Handshake

__all__ = [
    "AUTH_MESSAGE_TYPE",
    "MAX_AUTH_MESSAGE_SIZE",
    "Authenticate",
    "Authorize",
    "ExpiringAuthenticator",
    "FirstMessageAuthenticator",
    "JWTAuthenticator",
    "claims_expiry",
    "credentials_expiry",
    "default_principal_key",
    "extract_token",
    "parse_auth_message",
    "token_from_authorization",
    "token_from_subprotocols",
]

#: ``authenticate(websocket) -> principal | None``.
Authenticate = Callable[[Any], Awaitable[Any | None]]

#: ``authorize(principal, topic, action) -> bool``, sync or async.
Authorize = Callable[[Any, str, str], bool | Awaitable[bool]]

#: ``type`` of the first message that carries credentials.
AUTH_MESSAGE_TYPE = "auth"

#: A first ``auth`` message larger than this is refused unread (a token is ~1 KiB).
MAX_AUTH_MESSAGE_SIZE = 16 * 1024

_HMAC = frozenset({"HS256", "HS384", "HS512"})
_ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_MIN_HMAC_KEY_BYTES = 32


@runtime_checkable
class FirstMessageAuthenticator(Protocol):
    """An authenticator that can also take credentials from the first message.

    ``message_timeout`` seconds is how long the service waits for that message
    after completing the handshake (``None``: this path is off).
    """

    message_timeout: float | None

    async def __call__(self, websocket: Any) -> Any | None: ...

    async def authenticate_message(self, websocket: Any, text: str) -> Any | None:
        """Return the principal for the first frame ``text``; raise AuthenticationFailed."""
        ...


@runtime_checkable
class ExpiringAuthenticator(Protocol):
    """An authenticator that says when the credentials behind a principal expire.

    ``expires_at(principal)`` returns Unix seconds (``time.time()`` scale) from
    which the principal no longer counts as authenticated, or ``None`` when its
    credentials do not expire. Called once per connection and once per
    accepted ``auth`` refresh, never per message; an exception refuses the
    connection (1011) or the refresh (``handler_error``).
    """

    def expires_at(self, principal: Any) -> float | None: ...


def claims_expiry(principal: Any) -> float | None:
    """The ``exp`` claim of a claims mapping as a float (a number, not a bool), else ``None``."""
    if not isinstance(principal, Mapping):
        return None
    exp = principal.get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return float(exp)
    return None


def credentials_expiry(authenticate: Any, principal: Any) -> float | None:
    """When ``principal``'s credentials expire: ``authenticate.expires_at`` if it has
    one (see :class:`ExpiringAuthenticator`), else :func:`claims_expiry`.

    Raises whatever the authenticator's hook raises.
    """
    if isinstance(authenticate, ExpiringAuthenticator):
        return authenticate.expires_at(principal)
    return claims_expiry(principal)


# -- token extraction (sans I/O) --------------------------------------------------


def token_from_authorization(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value, else ``None``."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def token_from_subprotocols(
    offered: Sequence[str], prefix: str = TOKEN_SUBPROTOCOL_PREFIX
) -> str | None:
    """The token of the first ``bearer.<token>`` entry among offered subprotocols."""
    for protocol in offered:
        if protocol.lower().startswith(prefix) and len(protocol) > len(prefix):
            return protocol[len(prefix) :]
    return None


def extract_token(
    handshake: Handshake,
    *,
    header: bool = True,
    subprotocol_prefix: str | None = TOKEN_SUBPROTOCOL_PREFIX,
    query_param: str | None = None,
) -> str | None:
    """Return the first token found: header, then subprotocol, then query (if enabled).

    Raises AuthenticationFailed for an ambiguous request: several
    ``Authorization`` headers, or an ``Authorization`` header that is not a bearer
    token (rather than silently trying the next source).
    """
    if header:
        count = handshake.header_count("authorization")
        if count > 1:
            raise AuthenticationFailed("several authorization headers")
        if count == 1:
            token = token_from_authorization(handshake.header("authorization"))
            if token is None:
                raise AuthenticationFailed("authorization header is not a bearer token")
            return token
    if subprotocol_prefix is not None:
        token = token_from_subprotocols(handshake.subprotocols, subprotocol_prefix)
        if token is not None:
            return token
    if query_param is not None:
        token = handshake.query(query_param)
        if token:
            return token
    return None


def parse_auth_message(text: str | bytes) -> str:
    """The token of a first message ``{"type": "auth", "data": {"token": "..."}}``.

    ``token`` may also sit at the top level. Raises AuthenticationFailed for
    anything else (including a message over :data:`MAX_AUTH_MESSAGE_SIZE`).
    """
    if len(text) > MAX_AUTH_MESSAGE_SIZE:
        raise AuthenticationFailed("auth message too large")
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise AuthenticationFailed("expected an auth message") from None
    if not isinstance(raw, dict) or raw.get("type") != AUTH_MESSAGE_TYPE:
        raise AuthenticationFailed("expected an auth message")
    data = raw.get("data")
    token = data.get("token") if isinstance(data, dict) else raw.get("token")
    if not isinstance(token, str) or not token:
        raise AuthenticationFailed("auth message without a token")
    return token


def default_principal_key(principal: Any) -> str:
    """The key connections are counted by: ``sub`` of a claims mapping, else ``str()``."""
    if isinstance(principal, Mapping):
        subject = principal.get("sub")
        if subject is not None:
            return str(subject)
    for attribute in ("id", "sub", "username"):
        value = getattr(principal, attribute, None)
        if value is not None and not callable(value):
            return str(value)
    return str(principal)


# -- JWT ---------------------------------------------------------------------------


class JWTAuthenticator:
    """Verify a JWT with PyJWT; the principal is its claims dict.

    Keyword-only configuration:

    - ``key``: the HMAC secret (at least 32 bytes) for ``HS*``, or the public key
      (PEM text or a ``cryptography`` key object) for ``RS*``/``PS*``/``ES*``/``EdDSA``.
    - ``algorithms``: accepted algorithms, all symmetric or all asymmetric (mixing
      them would let an attacker sign with the public key as an HMAC secret).
    - ``audience``/``issuer``: checked when set; ``required_claims`` must be present
      (``exp`` and ``sub`` by default: a token without expiry is refused); ``leeway`` seconds of
      clock skew.
    - ``header``: read ``Authorization: Bearer``; ``subprotocol_prefix``: read an
      offered ``bearer.<token>`` subprotocol (``None``: off); ``query_param``: read
      ``?<query_param>=<token>`` (``None``, the default: off. Turn it on only with
      :func:`service.redact.install_log_redaction`, because servers log query strings).
    - ``message_timeout``: seconds to wait for a first ``auth`` message when the
      handshake carried no token (``None``, the default: off).

    :meth:`expires_at` gives the service each principal's ``exp`` (plus
    ``leeway``), and :meth:`authenticate_message` verifies the ``auth`` messages
    that refresh a connection's token, whatever ``message_timeout`` says.

    Raises ValueError for an unsafe configuration and ImportError (naming the
    package to install) when PyJWT is missing.
    """

    def __init__(
        self,
        *,
        key: Any,
        algorithms: Sequence[str] = ("HS256",),
        audience: str | Collection[str] | None = None,
        issuer: str | None = None,
        required_claims: Sequence[str] = ("exp", "sub"),
        leeway: float = 0.0,
        header: bool = True,
        subprotocol_prefix: str | None = TOKEN_SUBPROTOCOL_PREFIX,
        query_param: str | None = None,
        message_timeout: float | None = None,
    ) -> None:
        try:
            import jwt
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError("JWTAuthenticator needs PyJWT: pip install 'pyjwt[crypto]'") from None
        self._jwt = jwt
        algorithms = tuple(algorithms)
        if not algorithms:
            raise ValueError("at least one JWT algorithm is required")
        unknown = set(algorithms) - _HMAC - _ASYMMETRIC
        if unknown:
            raise ValueError(f"unsupported JWT algorithms (never 'none'): {sorted(unknown)}")
        if set(algorithms) & _HMAC and set(algorithms) & _ASYMMETRIC:
            raise ValueError("do not mix HMAC and public-key JWT algorithms in one authenticator")
        if set(algorithms) <= _HMAC:
            secret = key.encode() if isinstance(key, str) else key
            if not isinstance(secret, bytes) or len(secret) < _MIN_HMAC_KEY_BYTES:
                raise ValueError(f"an HMAC key must be at least {_MIN_HMAC_KEY_BYTES} bytes")
        if message_timeout is not None and message_timeout <= 0:
            raise ValueError("message_timeout must be positive (or None)")
        self._key = key
        self.algorithms = algorithms
        self.audience = audience
        self.issuer = issuer
        self.required_claims = tuple(required_claims)
        self.leeway = leeway
        self.header = header
        self.subprotocol_prefix = subprotocol_prefix
        self.query_param = query_param
        self.message_timeout = message_timeout

    async def __call__(self, websocket: Any) -> dict[str, Any] | None:
        """Verify the handshake's token; ``None`` if there is none (see ``message_timeout``).

        Raises AuthenticationFailed for a bad token, or for a missing one when
        the first-message path is off.
        """
        token = extract_token(
            Handshake.of(websocket),
            header=self.header,
            subprotocol_prefix=self.subprotocol_prefix,
            query_param=self.query_param,
        )
        if token is None:
            if self.message_timeout is not None:
                return None
            raise AuthenticationFailed("authentication required")
        return self.verify(token)

    async def authenticate_message(self, websocket: Any, text: str) -> dict[str, Any]:
        """Verify the token of an ``auth`` message; raises AuthenticationFailed."""
        return self.verify(parse_auth_message(text))

    def expires_at(self, principal: Any) -> float | None:
        """When :meth:`verify` stops accepting the principal's token: its ``exp``
        claim (as PyJWT reads it, whole seconds) plus ``leeway``; ``None`` without ``exp``."""
        if not isinstance(principal, Mapping) or principal.get("exp") is None:
            return None
        try:
            exp = int(principal["exp"])
        except (ValueError, TypeError, OverflowError):
            return None
        return float(exp + self.leeway)

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims of a valid ``token``; raises AuthenticationFailed with why not."""
        jwt = self._jwt
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(self.required_claims)},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationFailed("token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationFailed("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationFailed("token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationFailed("token issuer not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationFailed(f"token lacks the {exc.claim!r} claim") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            # Bad signature, wrong algorithm, malformed token: one reason for all, so
            # the reply does not help an attacker tell them apart.
            raise AuthenticationFailed("invalid token") from None
        return claims
