"""Auth: hashed passwords, sessions, API tokens, roles, and the CLI."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from pathray.catalog import Catalog
from pathray.catalog.auth import (
    AuthenticationError,
    PermissionDeniedError,
    check_password,
    hash_password,
    require_role,
)
from pathray.errors import ConfigError, NotFoundError

PASSWORD = "correct horse battery"


def _raw(cat: Catalog, sql: str) -> list[tuple[object, ...]]:
    with cat.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(sql))]


def test_passwords_are_stored_as_salted_scrypt_hashes(catalog: Catalog) -> None:
    catalog.add_user("ana")
    catalog.add_user("ben", "engineer")
    catalog.set_password("ana", PASSWORD)
    catalog.set_password("ben", PASSWORD)
    hashes = [str(h) for (h,) in _raw(catalog, "SELECT password_hash FROM user_credentials")]
    assert len(hashes) == 2 and hashes[0] != hashes[1]  # per-user salt
    for stored in hashes:
        assert stored.startswith("scrypt$") and PASSWORD not in stored
    audit = [e for e in catalog.audit_entries("user") if e.action == "set_password"]
    assert len(audit) == 2 and all(PASSWORD not in str(e.details) for e in audit)
    assert catalog.verify_password("ben", PASSWORD).role == "engineer"


def test_wrong_or_unknown_credentials_are_refused_alike(catalog: Catalog) -> None:
    catalog.add_user("ana")
    catalog.add_user("nopass")
    catalog.set_password("ana", PASSWORD)
    messages = set()
    for name, password in [("ana", "wrong password"), ("ghost", PASSWORD), ("nopass", PASSWORD)]:
        with pytest.raises(AuthenticationError) as info:
            catalog.verify_password(name, password)
        messages.add(str(info.value))
    assert messages == {"Unknown user or wrong password."}
    with pytest.raises(ConfigError, match="at least 8"):
        catalog.set_password("ana", "short")
    with pytest.raises(NotFoundError):
        catalog.set_password("ghost", PASSWORD)
    catalog.set_password("ana", "a new password")
    with pytest.raises(AuthenticationError):
        catalog.verify_password("ana", PASSWORD)
    assert catalog.verify_password("ana", "a new password").name == "ana"


def test_an_unknown_user_costs_a_hash_check_too() -> None:
    stored = hash_password(PASSWORD)
    assert check_password(PASSWORD, stored) and not check_password("nope", stored)
    assert not check_password(PASSWORD, "garbage")

    def best(fn) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    from pathray.catalog import auth

    known = best(lambda: check_password("wrong", stored))
    unknown = best(lambda: check_password("wrong", auth._DUMMY_HASH))
    assert 0.3 < unknown / known < 3.0


def test_sessions_expire_and_end(catalog: Catalog) -> None:
    catalog.add_user("ana", "admin")
    catalog.set_password("ana", PASSWORD)
    issued = catalog.login("ana", PASSWORD)
    assert issued.token.startswith("prs_")
    principal = catalog.resolve_token(issued.token)
    assert (principal.name, principal.role, principal.kind) == ("ana", "admin", "session")
    stored = [h for (h,) in _raw(catalog, "SELECT token_hash FROM auth_sessions")]
    assert stored == [hashlib.sha256(issued.token.encode()).hexdigest()]
    catalog.end_session(issued.token)
    with pytest.raises(AuthenticationError, match="ended"):
        catalog.resolve_session(issued.token)
    short = catalog.create_session("ana", ttl=timedelta(milliseconds=50))
    time.sleep(0.1)
    with pytest.raises(AuthenticationError, match="expired"):
        catalog.resolve_token(short.token)
    with pytest.raises(AuthenticationError, match="unknown"):
        catalog.resolve_token("prs_" + "x" * 43)
    with pytest.raises(AuthenticationError, match="prs_ or prt_"):
        catalog.resolve_token("Bearer nonsense")
    with pytest.raises(AuthenticationError):
        catalog.login("ana", "wrong password")
    with pytest.raises(ConfigError):
        catalog.create_session("ana", ttl=timedelta(0))
    actions = [e.action for e in catalog.audit_entries("user")]
    assert actions.count("login") == 2 and actions.count("logout") == 1


def test_api_tokens_are_role_scoped_and_revocable(catalog: Catalog) -> None:
    issued = catalog.create_api_token("scanner-bridge", "service", actor="admin")
    token = issued.token
    assert token.startswith("prt_") and len(token) > 40
    stored = _raw(catalog, "SELECT token_hash, prefix FROM api_tokens")
    assert stored == [(hashlib.sha256(token.encode()).hexdigest(), token[:12])]
    principal = catalog.resolve_token(token)
    assert (principal.name, principal.role, principal.kind) == (
        "scanner-bridge",
        "service",
        "token",
    )
    listed = catalog.list_api_tokens()
    assert [t.name for t in listed] == ["scanner-bridge"] and listed[0].last_used_at is not None
    assert listed[0].active and listed[0].created_by == "admin"
    assert require_role(principal, ["service"]) is principal
    with pytest.raises(PermissionDeniedError, match="engineer"):
        require_role(principal, ["engineer"])
    revoked = catalog.revoke_api_token(listed[0].prefix, actor="admin")
    assert revoked.revoked_at is not None and not revoked.active
    with pytest.raises(AuthenticationError, match="revoked"):
        catalog.resolve_api_token(token)
    assert (
        catalog.list_api_tokens() == [] and len(catalog.list_api_tokens(include_revoked=True)) == 1
    )
    brief = catalog.create_api_token("job", "engineer", ttl=timedelta(milliseconds=50))
    time.sleep(0.1)
    with pytest.raises(AuthenticationError, match="expired"):
        catalog.resolve_token(brief.token)
    with pytest.raises(ConfigError, match="role"):
        catalog.create_api_token("x", "root")
    with pytest.raises(NotFoundError):
        catalog.revoke_api_token(999)


def test_roles_imply_lesser_roles(catalog: Catalog) -> None:
    admin = catalog.create_api_token("a", "admin").principal
    engineer = catalog.create_api_token("e", "engineer").principal
    clinician = catalog.create_api_token("c", "clinician").principal
    assert admin.allows("service") and admin.allows("engineer")
    assert engineer.allows("clinician") and not engineer.allows("admin")
    assert not clinician.allows("engineer") and not engineer.allows("service")
    require_role(engineer, ["clinician", "admin"])
    with pytest.raises(PermissionDeniedError):
        require_role(clinician, ["engineer", "admin"])


def test_cli_sets_passwords_and_manages_tokens(tmp_path: Path, monkeypatch) -> None:
    from pathray.cli import app

    monkeypatch.setenv("PATHRAY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PATHRAY_CATALOG_URL", raising=False)
    runner = CliRunner()
    assert runner.invoke(app, ["users", "add", "ana", "--role", "engineer"]).exit_code == 0
    result = runner.invoke(app, ["users", "passwd", "ana", "--password-stdin"], input=PASSWORD)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["users", "passwd", "ana"], input="new password\nnew password\n")
    assert result.exit_code == 0 and "new password" not in result.stdout.replace(
        "new password:", ""
    )
    missing = runner.invoke(app, ["users", "passwd", "ghost", "--password-stdin"], input=PASSWORD)
    assert missing.exit_code == 2 and "does not exist" in missing.output
    created = runner.invoke(app, ["tokens", "create", "bridge", "--role", "service"])
    assert created.exit_code == 0
    token = created.stdout.strip().splitlines()[-1]
    listed = runner.invoke(app, ["tokens", "list"])
    assert "bridge" in listed.stdout and token not in listed.stdout and token[:12] in listed.stdout
    assert runner.invoke(app, ["tokens", "revoke", "1"]).exit_code == 0
    assert "bridge" not in runner.invoke(app, ["tokens", "list"]).stdout
    assert "revoked" in runner.invoke(app, ["tokens", "list", "--all"]).stdout
    bad = runner.invoke(app, ["tokens", "create", "x", "--role", "root"])
    assert bad.exit_code == 2 and "role must be one of" in bad.output
    with Catalog.open(f"sqlite:///{tmp_path / 'home' / 'catalog.db'}") as cat:
        assert cat.verify_password("ana", "new password").role == "engineer"
        with pytest.raises(AuthenticationError, match="revoked"):
            cat.resolve_token(token)
