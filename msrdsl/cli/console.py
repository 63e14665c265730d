"""One place for output: the consoles, the error path, and JSON for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console

from msrdsl.errors import MsrdslError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

USER_ERROR = 2
INTERRUPTED = 130


def print_error(err: MsrdslError) -> None:
    """A user error on stderr, as `path:line:col: error: message`, the line and a caret."""
    err_console.print(err.render(), markup=False, highlight=False, soft_wrap=True)


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def run_guarded(cli: click.Command, argv: list[str] | None, debug: bool) -> int:
    """Run a click command; map our errors to exit code 2 and Ctrl-C to 130, no traceback."""
    try:
        # Without standalone mode click returns a command's exit code instead of exiting.
        code = cli.main(args=argv, standalone_mode=False)
    except MsrdslError as err:
        if debug:
            raise
        print_error(err)
        return USER_ERROR
    except click.exceptions.Abort:
        err_console.print("aborted")
        return INTERRUPTED
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.exceptions.Exit as err:
        return err.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return INTERRUPTED
    except BrokenPipeError:
        sys.stderr.close()  # output piped into `head`: not an error
        return 0
    return code if isinstance(code, int) else 0
