"""The `stationd` command line: one typer app, one small function per command, grouped by what the person is doing.

setup: init, check-config, identity, doctor; run: run, demo; read: status, devices, export; inspect: one iPad as it
is now; reports: the outbox; asm: Apple School/Business Manager by hand; ports: ports (and --learn); queue: the work
list; fleet: the fleet's stations; blueprint: its shared settings; the emulator's
command lives with the emulator (stationd.emulator.command).
"""

from __future__ import annotations

import typer

from stationd.cli import asm, blueprint, fleet, inspect, ports, queue, read, reports, run, setup
from stationd.cli.common import HELP_MARKUP
from stationd.emulator.command import emulator_command

app = typer.Typer(
    rich_markup_mode=HELP_MARKUP,
    name="stationd",
    help="Enrollment station for iPads: plug them in and walk away.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("init")(setup.init_command)
app.command("check-config")(setup.check_config_command)
app.add_typer(setup.identity_app, name="identity")
app.command("run")(run.run_command)
app.command("status")(read.status_command)
app.command("devices")(read.devices_command)
app.command("export")(read.export_command)
app.command("reports")(reports.reports_command)
app.add_typer(asm.asm_app, name="asm")
app.command("inspect")(inspect.inspect_command)
app.command("ports")(ports.ports_command)
app.command("doctor")(setup.doctor_command)
app.command("demo")(run.demo_command)
app.command("emulator")(emulator_command)
app.add_typer(queue.queue_app, name="queue")
app.command("fleet")(fleet.fleet_command)
app.add_typer(blueprint.blueprint_app, name="blueprint")


def main() -> None:
    app()
