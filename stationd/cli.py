"""The `stationd` command line: one typer app, one small function per command."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="stationd",
    help="Enrollment station for iPads: plug them in and walk away.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
