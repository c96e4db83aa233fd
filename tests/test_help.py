"""`--help` teaches: every command's help renders, reflowed to the terminal, and keeps the names of configuration
sections ("[plugins.asm]", "[fleet] blueprint") that a markup language could take for tags."""

from __future__ import annotations

import re
from typing import Any

import typer
from typer.testing import CliRunner

from stationd.cli import app


def commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            found += commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


def test_every_commands_help_keeps_the_section_names_it_gives() -> None:
    root: Any = typer.main.get_command(app)
    runner = CliRunner()
    for path in commands(root):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
        assert result.exit_code == 0, (path, result.output)
        command = root
        for name in path:
            command = command.commands[name]
        written = " ".join([command.help or "", *(getattr(p, "help", None) or "" for p in command.params)])
        shown = " ".join(result.output.replace("│", " ").split())
        for section in re.findall(r"\\?\[[a-z_.]+\]", written):
            assert section.lstrip("\\") in shown, (path, section)
