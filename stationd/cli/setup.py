"""Setting a station up: init, check-config, the supervision identity, doctor."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import typer

from stationd.cli.common import CONFIG_OPTION_HELP, HELP_MARKUP, error_exit
from stationd.config import ConfigError, check_config, default_config_path, example_config, load_config
from stationd.doctor import run_checks
from stationd.files import write_private_file
from stationd.identity import (
    Identity,
    IdentityError,
    PasswordRequired,
    create_identity,
    import_identity,
    load_identity,
)


def init_command(
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
    org: str = typer.Option("Example School", "--org", help="Your organisation's name, as the iPads will show it."),
    force: bool = typer.Option(False, "--force", help="Replace an existing configuration file."),
) -> None:
    """Write a commented configuration file for you to edit.

    Example: stationd init --org "Lincoln Primary School"
    """
    path = config or default_config_path()
    try:
        write_private_file(path, example_config(org).encode(), force)
    except FileExistsError:
        error_exit(f"{path} already exists; edit it, or add --force to replace it with the example")
    except OSError as error:
        error_exit(f"cannot write {path}: {error.strerror}")
    identity = path.parent / "identity.pem"
    typer.echo(f"Wrote {path}. Next steps:")
    typer.echo(f"  1. Edit {path}: organisation name, Wi-Fi, enrollment.")
    typer.echo(f'  2. Create a supervision identity: stationd identity create --org "{org}" --out {identity}')
    typer.echo(f"     or import Apple Configurator's: stationd identity import FILE.p12 --out {identity}")
    typer.echo(f"  3. Check everything: stationd check-config --config {path}")


def check_config_command(
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
) -> None:
    """Check the configuration file and the files it names (identity, profiles).

    Lists every problem with its line. Exit code 0 when the station can run, 1 otherwise.

    Example: stationd check-config --config /etc/stationd/stationd.toml
    """
    path = config or default_config_path()
    try:
        loaded = load_config(path)
    except ConfigError as error:
        typer.echo(f"Problems in {error.path}:")
        for issue in error.issues:
            typer.echo(f"error: {issue}")
        raise typer.Exit(1) from None
    problems = check_config(loaded)
    for problem in problems:
        typer.echo(problem)
    if any(problem.startswith("error:") for problem in problems):
        raise typer.Exit(1)
    warnings = f" ({len(problems)} warning{'s' if len(problems) > 1 else ''})" if problems else ""
    typer.echo(f"configuration OK{warnings}")


identity_app = typer.Typer(
    rich_markup_mode=HELP_MARKUP,
    help="The supervision identity: the certificate and key that prove the iPads belong to your organisation.",
    no_args_is_help=True,
)
_IDENTITY_OUT_HELP = "Where to write the identity. Default: identity.pem next to the configuration file."


def _default_identity_path() -> Path:
    return default_config_path().parent / "identity.pem"


def _print_identity(identity: Identity) -> None:
    typer.echo(f"File:          {identity.path}")
    typer.echo(f"Organization:  {identity.organization}")
    typer.echo(f"SHA-256:       {identity.fingerprint_sha256}")
    typer.echo(f"Valid until:   {identity.not_valid_after:%Y-%m-%d}")


@identity_app.command("create")
def identity_create(
    org: str = typer.Option(..., "--org", help="Your organisation's name, as the iPads will show it."),
    out: Path | None = typer.Option(None, "--out", help=_IDENTITY_OUT_HELP),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing identity (iPads supervised with it stop trusting this station)."
    ),
) -> None:
    """Create a new supervision identity.

    Use it when your organisation has none yet.
    iPads supervised with Apple Configurator trust only its identity until erased: import that one instead.
    Keep a copy of the file in a safe place.

    Example: stationd identity create --org "Lincoln Primary School"
    """
    try:
        identity = create_identity(out or _default_identity_path(), org, force)
    except IdentityError as error:
        error_exit(str(error))
    _print_identity(identity)


def _import_asking_password(source: Path, dest: Path, password: str | None, force: bool) -> Identity:
    try:
        return import_identity(source, dest, password, force)
    except PasswordRequired:
        password = typer.prompt(f"Password for {source.name}", hide_input=True)
        return import_identity(source, dest, password, force)


@identity_app.command("import")
def identity_import(
    file: Path = typer.Argument(..., help="The .p12 file exported from Apple Configurator, or a PEM file."),
    out: Path | None = typer.Option(None, "--out", help=_IDENTITY_OUT_HELP),
    password_env: str | None = typer.Option(
        None, "--password-env", metavar="VAR", help="Read the password from this environment variable (for scripts)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing identity file."),
) -> None:
    """Import the supervision identity exported from Apple Configurator.

    In Apple Configurator: Settings > Organizations > select yours > Export Supervision Identity.
    The password is asked for (hidden) unless --password-env names a variable holding it.

    Example: stationd identity import "Lincoln Primary School.p12"
    """
    password = None
    if password_env is not None:
        if password_env not in os.environ:
            error_exit(f"the environment variable {password_env} is not set")
        password = os.environ[password_env]
    try:
        identity = _import_asking_password(file, out or _default_identity_path(), password, force)
    except IdentityError as error:
        error_exit(str(error))
    _print_identity(identity)


@identity_app.command("show")
def identity_show(
    path: Path | None = typer.Argument(None, help="Identity file. Default: identity.pem next to the configuration."),
) -> None:
    """Show an identity's organisation, fingerprint and expiry date (never its private key).

    Example: stationd identity show /etc/stationd/identity.pem
    """
    try:
        identity = load_identity(path or _default_identity_path())
    except IdentityError as error:
        error_exit(str(error))
    _print_identity(identity)


def doctor_command(
    config: Path | None = typer.Option(None, "--config", help=CONFIG_OPTION_HELP),
) -> None:
    """Check that this machine can run a station: configuration, identity, database, usbmuxd.

    Example: stationd doctor
    """
    results = anyio.run(run_checks, config or default_config_path())
    for ok, what, detail in results:
        typer.echo(f"{'ok  ' if ok else 'FAIL'}  {what}: {detail}")
    if not all(ok for ok, _, _ in results):
        raise typer.Exit(1)
