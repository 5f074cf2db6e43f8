"""Authentication: hashed passwords, login sessions and role-scoped API tokens.

Nothing secret is stored in clear. Passwords are hashed with scrypt and a random per-user salt
(``scrypt$n$r$p$salt$hash``, base64), and compared in constant time; checking an unknown user
runs the same scrypt against a dummy hash, so the answer time does not tell which users exist.
Session and API tokens are 256-bit random secrets handed out once (``prs_...`` and
``prt_...``); only their SHA-256 is stored (a fast hash is enough for a secret of that entropy).

Roles: users are clinicians, engineers or admins; API tokens may also be ``service`` tokens.
:func:`require_role` checks a :class:`Principal` against the roles an action allows (an admin
may do anything, an engineer anything a clinician may).

Example:
    >>> cat.set_password("ana", "correct horse battery")  # doctest: +SKIP
    >>> issued = cat.login("ana", "correct horse battery")  # doctest: +SKIP
    >>> cat.resolve_token(issued.token).name  # doctest: +SKIP
    'ana'
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from pathray.catalog.base import CatalogBase
from pathray.catalog.models import (
    TOKEN_ROLES,
    ApiTokenRow,
    AuthSessionRow,
    UserCredentialRow,
    UserRow,
    utcnow,
)
from pathray.errors import ConfigError, NotFoundError, PathRayError

SESSION_PREFIX = "prs_"
TOKEN_PREFIX = "prt_"
#: scrypt cost: 2**14 x 8 blocks = 16 MiB and tens of milliseconds per check.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD_LENGTH = 8
DEFAULT_SESSION_TTL = timedelta(hours=8)
# Recording each use of a token would write on every request; once a minute is enough.
_LAST_USED_RESOLUTION = timedelta(seconds=60)
# Lower bound of what each role implies (an admin passes every check).
_IMPLIES = {"admin": set(TOKEN_ROLES), "engineer": {"engineer", "clinician"}}


class AuthenticationError(PathRayError):
    """Wrong credentials, or an unknown, expired or revoked session or token (HTTP 401)."""


class PermissionDeniedError(PathRayError):
    """An authenticated principal whose role does not allow the action (HTTP 403)."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts as, resolved from a session or an API token.

    Attributes:
        name: The user name, or the API client's name.
        role: ``clinician``, ``engineer``, ``admin`` or ``service``.
        kind: ``"session"``, ``"token"``, or ``"password"`` (from :meth:`verify_password`).
        credential_id: The session's or token's id.
        expires_at: When the credential expires (None: never).
    """

    name: str
    role: str
    kind: str
    credential_id: int
    expires_at: datetime | None

    def allows(self, *roles: str) -> bool:
        """Whether this principal may act as one of ``roles``."""
        granted = _IMPLIES.get(self.role, {self.role})
        return any(role in granted for role in roles)


@dataclass(frozen=True)
class ApiToken:
    """An API token's public record (the secret itself is never stored)."""

    id: int
    name: str
    role: str
    prefix: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        """Not revoked and not expired."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > utcnow())

    @classmethod
    def from_row(cls, row: ApiTokenRow) -> ApiToken:
        """Build the record from its ORM row."""
        return cls(
            row.id,
            row.name,
            row.role,
            row.prefix,
            row.created_by,
            row.created_at,
            row.expires_at,
            row.last_used_at,
            row.revoked_at,
        )


@dataclass(frozen=True)
class IssuedSecret:
    """A new session or API token: the plaintext ``token`` is shown this once only.

    Attributes:
        token: The secret to hand to the client.
        principal: Who it authenticates as.
    """

    token: str
    principal: Principal


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Hash a password with scrypt and a random 16-byte salt.

    Returns:
        ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``.
    """
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash of :func:`hash_password` (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return scheme == "scrypt" and hmac.compare_digest(actual, expected)


# Checked against when the user is unknown, so both paths cost one scrypt.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def token_digest(token: str) -> str:
    """The stored form of a session or API token (SHA-256, hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def require_role(principal: Principal, roles: Iterable[str]) -> Principal:
    """Refuse a principal whose role allows none of ``roles``.

    Returns:
        The principal, for chaining.

    Raises:
        PermissionDeniedError: The role does not allow the action.
    """
    wanted = tuple(roles)
    if not principal.allows(*wanted):
        raise PermissionDeniedError(
            f"This action needs the role {' or '.join(wanted)}. "
            f"Got {principal.name!r} with role {principal.role!r} instead."
        )
    return principal


class AuthMixin(CatalogBase):
    """Passwords, sessions and API tokens."""

    # -- passwords ---------------------------------------------------------------------------

    def set_password(self, name: str, password: str, *, actor: str = "system") -> None:
        """Set (or replace) a user's password; only its scrypt hash is stored.

        Raises:
            NotFoundError: No such user.
            ConfigError: The password is shorter than 8 characters.
        """
        if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
            raise ConfigError(
                f"A password must be at least {MIN_PASSWORD_LENGTH} characters. "
                f"Got {len(password) if isinstance(password, str) else 0} instead."
            )
        hashed = hash_password(password)
        with self.transaction() as session:
            user = self._user_row(session, name)
            row = session.get(UserCredentialRow, user.id)
            if row is None:
                session.add(UserCredentialRow(user_id=user.id, password_hash=hashed))
            else:
                row.password_hash, row.updated_at = hashed, utcnow()
            self._audit(session, actor, "set_password", "user", user.id, {"name": name})

    def verify_password(self, name: str, password: str) -> Principal:
        """Check a user's password.

        Returns:
            The user as a principal (kind ``"password"``, no expiry).

        Raises:
            AuthenticationError: Unknown user, no password set, or a wrong password (the same
                message and about the same time for each).
        """
        with self.transaction() as session:
            found = session.execute(
                select(UserRow, UserCredentialRow.password_hash)
                .outerjoin(UserCredentialRow, UserCredentialRow.user_id == UserRow.id)
                .where(UserRow.name == name)
            ).first()
        stored = found[1] if found is not None and found[1] else _DUMMY_HASH
        ok = check_password(password, stored) and found is not None and bool(found[1])
        if not ok or found is None:
            raise AuthenticationError("Unknown user or wrong password.")
        user = found[0]
        return Principal(user.name, user.role, "password", user.id, None)

    # -- sessions ----------------------------------------------------------------------------

    def create_session(
        self, name: str, *, ttl: timedelta = DEFAULT_SESSION_TTL, actor: str | None = None
    ) -> IssuedSecret:
        """Open a session for a user (after :meth:`verify_password`, or see :meth:`login`).

        Args:
            name: The user.
            ttl: How long the session lasts.
            actor: Who asks, for the audit log; defaults to the user.

        Returns:
            The session token (shown once) and its principal.

        Raises:
            NotFoundError: No such user.
            ConfigError: A non-positive ``ttl``.
        """
        if ttl <= timedelta(0):
            raise ConfigError(f"A session ttl must be positive. Got {ttl} instead.")
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        expires = utcnow() + ttl
        with self.transaction() as session:
            user = self._user_row(session, name)
            row = AuthSessionRow(
                user_id=user.id, token_hash=token_digest(token), expires_at=expires
            )
            session.add(row)
            session.flush()
            details = {"session_id": row.id, "expires_at": expires.isoformat()}
            self._audit(session, actor or name, "login", "user", user.id, details)
            return IssuedSecret(token, Principal(user.name, user.role, "session", row.id, expires))

    def login(
        self, name: str, password: str, *, ttl: timedelta = DEFAULT_SESSION_TTL
    ) -> IssuedSecret:
        """Check a password and open a session.

        Raises:
            AuthenticationError: Unknown user or wrong password.
        """
        self.verify_password(name, password)
        return self.create_session(name, ttl=ttl)

    def resolve_session(self, token: str) -> Principal:
        """The user behind a session token.

        Raises:
            AuthenticationError: Unknown, expired or revoked session.
        """
        with self.transaction() as session:
            found = session.execute(
                select(AuthSessionRow, UserRow)
                .join(UserRow, UserRow.id == AuthSessionRow.user_id)
                .where(AuthSessionRow.token_hash == token_digest(str(token)))
            ).first()
        if found is None:
            raise AuthenticationError("The session is unknown; log in again.")
        row, user = found
        if row.revoked_at is not None:
            raise AuthenticationError("The session has ended; log in again.")
        if row.expires_at <= utcnow():
            raise AuthenticationError("The session has expired; log in again.")
        return Principal(user.name, user.role, "session", row.id, row.expires_at)

    def end_session(self, token: str, *, actor: str | None = None) -> None:
        """Revoke a session (log out). Ending an ended session does nothing.

        Raises:
            AuthenticationError: Unknown session.
        """
        with self.transaction() as session:
            found = session.execute(
                select(AuthSessionRow, UserRow.name)
                .join(UserRow, UserRow.id == AuthSessionRow.user_id)
                .where(AuthSessionRow.token_hash == token_digest(str(token)))
            ).first()
            if found is None:
                raise AuthenticationError("The session is unknown.")
            row, name = found
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                self._audit(
                    session, actor or name, "logout", "user", row.user_id, {"session_id": row.id}
                )

    # -- API tokens --------------------------------------------------------------------------

    def create_api_token(
        self,
        name: str,
        role: str = "service",
        *,
        ttl: timedelta | None = None,
        actor: str = "system",
    ) -> IssuedSecret:
        """Issue an API token for a service client.

        Args:
            name: The client's name (several tokens per client are allowed, for rotation).
            role: ``service``, ``clinician``, ``engineer`` or ``admin``.
            ttl: Lifetime; None never expires.
            actor: Who asks, for the audit log.

        Returns:
            The token (shown this once only) and its principal.

        Raises:
            ConfigError: Unknown role, empty name or non-positive ttl.
        """
        self._check_choice("role", role, TOKEN_ROLES)
        if not name or len(name) > 128:
            raise ConfigError(f"A token name must be 1-128 characters. Got {name!r} instead.")
        if ttl is not None and ttl <= timedelta(0):
            raise ConfigError(f"A token ttl must be positive. Got {ttl} instead.")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = None if ttl is None else utcnow() + ttl
        with self.transaction() as session:
            row = ApiTokenRow(
                name=name,
                role=role,
                token_hash=token_digest(token),
                prefix=token[:12],
                created_by=actor,
                expires_at=expires,
            )
            session.add(row)
            session.flush()
            details = {"name": name, "role": role, "prefix": row.prefix}
            self._audit(session, actor, "create", "api_token", row.id, details)
            return IssuedSecret(token, Principal(name, role, "token", row.id, expires))

    def resolve_api_token(self, token: str) -> Principal:
        """The client behind an API token (records its use, at most once a minute).

        Raises:
            AuthenticationError: Unknown, expired or revoked token.
        """
        now = utcnow()
        with self.transaction() as session:
            row = session.scalar(
                select(ApiTokenRow).where(ApiTokenRow.token_hash == token_digest(str(token)))
            )
            if row is None:
                raise AuthenticationError("The API token is unknown.")
            if row.revoked_at is not None:
                raise AuthenticationError(f"API token {row.prefix}... has been revoked.")
            if row.expires_at is not None and row.expires_at <= now:
                raise AuthenticationError(f"API token {row.prefix}... has expired.")
            if row.last_used_at is None or now - row.last_used_at >= _LAST_USED_RESOLUTION:
                row.last_used_at = now
            return Principal(row.name, row.role, "token", row.id, row.expires_at)

    def resolve_token(self, token: str) -> Principal:
        """Resolve a bearer token of either kind (by its ``prs_`` / ``prt_`` prefix).

        Raises:
            AuthenticationError: Malformed, unknown, expired or revoked.
        """
        token = str(token or "")
        if token.startswith(SESSION_PREFIX):
            return self.resolve_session(token)
        if token.startswith(TOKEN_PREFIX):
            return self.resolve_api_token(token)
        raise AuthenticationError("A bearer token must start with prs_ or prt_.")

    def revoke_api_token(self, token_id: int | str, *, actor: str = "system") -> ApiToken:
        """Revoke an API token by its id or its prefix (``prt_xxxxxxxx``).

        Raises:
            NotFoundError: No such token (or the prefix matches several).
        """
        with self.transaction() as session:
            if isinstance(token_id, int) or str(token_id).isdigit():
                rows = [session.get(ApiTokenRow, int(token_id))]
            else:
                rows = list(
                    session.scalars(select(ApiTokenRow).where(ApiTokenRow.prefix == str(token_id)))
                )
            if len(rows) != 1 or rows[0] is None:
                raise NotFoundError(
                    f"API token must be an existing token id or unique prefix. Got {token_id!r}."
                )
            row = rows[0]
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                self._audit(session, actor, "revoke", "api_token", row.id, {"name": row.name})
            session.flush()
            return ApiToken.from_row(row)

    def list_api_tokens(
        self, name: str | None = None, *, include_revoked: bool = False
    ) -> list[ApiToken]:
        """API tokens by id, optionally of one client, revoked ones only when asked."""
        with self.transaction() as session:
            query = select(ApiTokenRow).order_by(ApiTokenRow.id)
            if name is not None:
                query = query.where(ApiTokenRow.name == name)
            if not include_revoked:
                query = query.where(ApiTokenRow.revoked_at.is_(None))
            return [ApiToken.from_row(row) for row in session.scalars(query)]

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _user_row(session: Session, name: str) -> UserRow:
        row = session.scalar(select(UserRow).where(UserRow.name == name))
        if row is None:
            raise NotFoundError(f"User '{name}' does not exist.")
        return row


__all__ = [
    "ApiToken",
    "AuthMixin",
    "AuthenticationError",
    "IssuedSecret",
    "PermissionDeniedError",
    "Principal",
    "check_password",
    "hash_password",
    "require_role",
    "token_digest",
]
