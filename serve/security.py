"""Bearer tokens per client, resolved through the catalog (stored hashed), scoped by role.

No token, no answer: every endpoint but ``/health`` and the OpenAPI schema needs
``Authorization: Bearer <token>`` (an API token ``prt_...`` from ``pathray tokens create``, or a
session ``prs_...`` of the app). A missing or unknown token gets 401 (with
``WWW-Authenticate: Bearer``); a known token whose role lacks the endpoint's scope gets 403.
Roles imply others as the catalog says (:meth:`pathray.catalog.auth.Principal.allows`: admin
allows everything, engineer implies clinician).

Resolved tokens are cached for a few seconds per replica, so a request costs one database
look-up per client and TTL, and a revoked token stops working within that TTL.

Example:
    >>> SCOPES["jobs"]
    ('engineer', 'service')
"""

# No ``from __future__ import annotations``: FastAPI reads the dependencies' annotations in the
# Serve replica, where the functions arrive pickled by value, without this module's globals.

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pathray.catalog.auth import AuthenticationError, Principal
from serve.errors import ApiError

#: Scope -> the roles that may use it (a role the catalog says implies one of them may too).
SCOPES: dict[str, tuple[str, ...]] = {
    "infer": ("clinician", "service"),
    "read": ("clinician", "service"),
    "jobs": ("engineer", "service"),
    "monitor": ("engineer", "service"),
}
_bearer = HTTPBearer(auto_error=False, description="An API token: `pathray tokens create`.")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


class TokenAuth:
    """Resolve bearer tokens, with a short cache.

    Args:
        resolve: Token -> its principal; raises ``AuthenticationError`` for an unknown,
            revoked or expired token.
        ttl_s: Seconds a resolution (found or not) is reused.
    """

    def __init__(self, resolve: Callable[[str], Principal], ttl_s: float = 5.0) -> None:
        self._resolve = resolve
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def principal(self, token: str) -> Principal | None:
        """The principal of a token (None when unknown, revoked or expired)."""
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        try:
            principal: Principal | None = self._resolve(token) if len(token) <= 512 else None
        except AuthenticationError:
            principal = None
        with self._lock:
            if len(self._cache) > 10_000:  # bound the memory a token-spraying client can take
                self._cache.clear()
            self._cache[key] = (now + self.ttl_s, principal)
        return principal


_installed: list[TokenAuth] = []


def install_auth(auth: TokenAuth) -> None:
    """Make ``auth`` the resolver of this process's endpoints (called by the ingress replica).

    Serve freezes a copy of the FastAPI app when the deployment is defined, so the replica's
    state lives here, in the module, rather than on ``app.state``.
    """
    _installed[:] = [auth]


def current_auth() -> TokenAuth:
    """The resolver installed in this process."""
    if not _installed:
        raise ApiError("unavailable", "The service is starting; retry in a moment.")
    return _installed[0]


_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None: absent, other scheme)."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def authenticate(token: str | None) -> Principal:
    """The principal of a bearer token.

    Raises:
        ApiError: ``auth.missing_token`` or ``auth.invalid_token`` (401).
    """
    if not token:
        raise ApiError(
            "auth.missing_token",
            "An API token must be sent as 'Authorization: Bearer <token>'. Got none.",
            _CHALLENGE,
        )
    principal = current_auth().principal(token)
    if principal is None:
        raise ApiError(
            "auth.invalid_token", "The API token is unknown, revoked or expired.", _CHALLENGE
        )
    return principal


def requires(scope: str) -> Any:
    """A FastAPI dependency: the caller's principal, if its role has ``scope``.

    Raises:
        ApiError: 401 without a valid token, 403 with a role outside the scope.
    """
    roles = SCOPES[scope]

    def check(request: Request, creds: Bearer) -> Principal:
        principal = authenticate(creds.credentials if creds is not None else None)
        if not principal.allows(*roles):
            raise ApiError(
                "auth.forbidden",
                f"Role must be one of {list(roles)} (or one implying them) for this endpoint. "
                f"Got {principal.role!r} instead.",
            )
        return principal

    return Depends(check)


#: Dependencies of the endpoints, one per scope.
Inferrer = Annotated[Principal, requires("infer")]
Reader = Annotated[Principal, requires("read")]
Submitter = Annotated[Principal, requires("jobs")]
Monitor = Annotated[Principal, requires("monitor")]

__all__ = [
    "SCOPES",
    "Inferrer",
    "Monitor",
    "Principal",
    "Reader",
    "Submitter",
    "TokenAuth",
    "authenticate",
    "bearer_token",
    "requires",
]
