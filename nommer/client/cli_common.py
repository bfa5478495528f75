"""What the two halves of the ``nommer`` command share (``cli``: the
commands that talk to feederd; ``cli_admin``: ``nommer keys`` and ``nommer
aws``, which do not): the exit codes and how JSON and tables are printed."""

import json

import click

EXIT_NOT_FINISHED = 1
EXIT_API_ERROR = 2
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130


def print_json(value):
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def print_table(rows):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths)] + [row[-1]]
        click.echo("  ".join(cells).rstrip())

