"""CLI commands of the API front: `aim api` and `aim users create`. Mount them with `register(app)`."""

from __future__ import annotations

import logging
import sys

import typer

from aim.errors import AIMError

logger = logging.getLogger(__name__)

users_app = typer.Typer(help="Users who sign in to the dashboard and the API.", no_args_is_help=True)


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2)


def api(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="TCP port to listen on."),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Worker processes."),
    timeout_keep_alive: int = typer.Option(
        5, "--timeout-keep-alive", min=1, max=3600,
        help="Seconds an idle keep-alive connection stays open. Behind a load balancer, set it above the "
             "balancer's idle timeout.",
    ),
) -> None:
    """Run the REST API under /api/v1, with its metric flusher and periodic jobs, until interrupted."""
    from aim.api.server import serve

    try:
        serve(host, port, workers, timeout_keep_alive=timeout_keep_alive)
    except AIMError as exc:
        raise _fail(exc) from None


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        # One line, without its line ending, so `echo "$PASSWORD" | aim users create ...` works.
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@users_app.command("create")
def create_user(
    email: str = typer.Argument(..., help="Sign-in email, unique across the instance."),
    role: str = typer.Option(..., "--role", help="admin, analyst, manager or viewer."),
    org: str = typer.Option(..., "--org", help="Organization name; created if missing."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from the first line of stdin."),
    display_name: str = typer.Option("", "--name", help="Display name."),
) -> None:
    """Create a user. The password (12 to 1024 characters) is prompted for unless --password-stdin is given,
    and is stored only as an Argon2id hash."""
    from aim.runtime import get_runtime
    from aim.services import organizations, users
    from aim.services.actor import system

    password = _read_password(password_stdin)
    try:
        runtime = get_runtime()
        organization = organizations.get_or_create(runtime.db, org)
        user = users.create_user(runtime.db, organization["id"], system("cli"), email=email, password=password,
                                 role=role, display_name=display_name)
    except AIMError as exc:
        raise _fail(exc) from None
    typer.echo(f"created user {user['id']} ({user['email']}, {user['role']}) in organization {org}")


def register(app: typer.Typer) -> None:
    """Add `api` and the `users` group to the `aim` command."""
    app.command("api")(api)
    app.add_typer(users_app, name="users")
