"""``pathray users`` (passwords) and ``pathray tokens``: credentials for the apps and services.

Mounted by :mod:`pathray.cli` as ``users`` and ``tokens``. Passwords are read from a hidden
prompt (or stdin with ``--password-stdin``), never from the command line; a new API token is
printed once and cannot be shown again.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from pathray.cli.common import ME, Actor, console, friendly, open_catalog
from pathray.errors import ConfigError

if TYPE_CHECKING:
    pass

users_app = typer.Typer(help="Users: add, list, set passwords.", no_args_is_help=True)
tokens_app = typer.Typer(
    help="API tokens for services: create, list, revoke.", no_args_is_help=True
)


@users_app.command("list")
@friendly
def users_list() -> None:
    """List users."""
    catalog = open_catalog()
    table = Table("name", "role", "created")
    for user in catalog.list_users():
        table.add_row(user.name, user.role, f"{user.created_at:%Y-%m-%d %H:%M}")
    console.print(table)


@users_app.command("passwd")
@friendly
def users_passwd(
    name: Annotated[str, typer.Argument(help="User name.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin (scripts).")
    ] = False,
    actor: Actor = ME,
) -> None:
    """Set a user's password (asked twice, hidden)."""
    catalog = open_catalog()
    catalog.get_user(name)  # fail before asking for a password
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("new password", hide_input=True, confirmation_prompt=True)
    catalog.set_password(name, password, actor=actor)
    console.print(f"password set for {name}")


@tokens_app.command("create")
@friendly
def tokens_create(
    name: Annotated[str, typer.Argument(help="Client name (the service using the token).")],
    role: Annotated[str, typer.Option(help="service, clinician, engineer or admin.")] = "service",
    ttl_days: Annotated[
        float | None, typer.Option("--ttl-days", help="Lifetime in days (default: none).")
    ] = None,
    actor: Actor = ME,
) -> None:
    """Create an API token; it is printed once, store it now."""
    if ttl_days is not None and ttl_days <= 0:
        raise ConfigError(f"--ttl-days must be positive. Got {ttl_days} instead.")
    ttl = None if ttl_days is None else timedelta(days=ttl_days)
    issued = open_catalog().create_api_token(name, role, ttl=ttl, actor=actor)
    console.print(f"token {issued.principal.credential_id} for {name} ({role}); shown once:")
    print(issued.token)


@tokens_app.command("list")
@friendly
def tokens_list(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked tokens.")] = False,
) -> None:
    """List API tokens (never their secrets)."""
    table = Table("id", "name", "role", "prefix", "created", "expires", "last used", "state")
    for t in open_catalog().list_api_tokens(include_revoked=all_):
        table.add_row(
            str(t.id),
            t.name,
            t.role,
            t.prefix,
            f"{t.created_at:%Y-%m-%d %H:%M}",
            f"{t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "-",
            f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "-",
            "active" if t.active else ("revoked" if t.revoked_at else "expired"),
        )
    console.print(table)


@tokens_app.command("revoke")
@friendly
def tokens_revoke(
    token: Annotated[str, typer.Argument(help="Token id or prefix (prt_...).")],
    actor: Actor = ME,
) -> None:
    """Revoke an API token."""
    revoked = open_catalog().revoke_api_token(token, actor=actor)
    console.print(f"revoked token {revoked.id} ({revoked.name})")


@users_app.command("add")
@friendly
def users_add(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Option(help="clinician, engineer or admin.")] = "clinician",
    actor: Actor = ME,
) -> None:
    """Add a user (clinician, engineer or admin)."""
    open_catalog().add_user(name, role, actor=actor)
    console.print(f"added {role} {name}")
