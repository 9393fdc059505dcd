"""The ``clustertwin`` command line.

Each area of the product contributes one click group from its own module under
``clustertwin.commands``; this file only assembles them, so adding a command never
means editing another area's code.
"""

from __future__ import annotations

import importlib
import logging

import click

from clustertwin import __version__

# (module, attribute) of every command contributed to the top-level group. A module
# that fails to import is reported on use rather than breaking the whole CLI.
_COMMANDS: tuple[tuple[str, str], ...] = (
    ("clustertwin.commands.stack", "stack"),
    ("clustertwin.commands.twin", "twin"),
    ("clustertwin.commands.twin", "scenario"),
    ("clustertwin.commands.connector", "connector"),
    ("clustertwin.commands.worker", "worker"),
    ("clustertwin.commands.demo", "demo"),
    ("clustertwin.commands.backfill", "backfill"),
    ("clustertwin.commands.dashboards", "dashboards"),
    ("clustertwin.commands.alerts", "alerts"),
    ("clustertwin.commands.report", "report"),
    ("clustertwin.commands.restate", "restate"),
)


@click.group()
@click.version_option(__version__, prog_name="clustertwin")
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG instead of INFO.")
def main(verbose: bool) -> None:
    """Live digital twin of an industrial cluster's greenhouse-gas emissions."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # kafka-python narrates every connection at INFO; operators need its warnings only.
        logging.getLogger("kafka").setLevel(logging.WARNING)


def _register() -> None:
    for module_name, attr in _COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # that area has not contributed commands yet
            raise
        main.add_command(getattr(module, attr))


_register()
