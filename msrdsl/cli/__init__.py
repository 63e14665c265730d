"""The `msrdsl` command: a click group whose subcommands load on first use.

Each subcommand lives in its own module (msrdsl/cli/<name>.py) and is imported only when it
runs, so `msrdsl check` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from msrdsl import __version__

# command name -> (module, one-line help shown by `msrdsl --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("msrdsl.cli.check", "Validate .space and .genotype files."),
    "fmt": ("msrdsl.cli.fmt", "Print a .space or .genotype file in canonical layout."),
    "search": ("msrdsl.cli.search", "Run the architecture search a space describes."),
    "show": ("msrdsl.cli.show", "Draw a genotype's cells in the terminal or export them."),
    "import": ("msrdsl.cli.importer", "Convert a DARTS-notation or JSON genotype to a .genotype file."),
    "derive": ("msrdsl.cli.derive", "Re-derive a genotype from a search run under any rule."),
    "compare": ("msrdsl.cli.compare", "Compare rules on one run, or several genotypes."),
    "plot": ("msrdsl.cli.plot", "Plot a search run's losses and stable ranks."),
    "stats": ("msrdsl.cli.stats", "Parameters and mult-adds of a genotype's network."),
    "train": ("msrdsl.cli.train", "Train the evaluation network of a genotype."),
    "eval": ("msrdsl.cli.evaluate", "Test a trained checkpoint."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (module, _) in COMMANDS.items() if _exists(module)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not _exists(COMMANDS[name][0]):
            return None
        module = importlib.import_module(COMMANDS[name][0])
        return getattr(module, "command", None) or getattr(module, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, COMMANDS[n][1]) for n in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _exists(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="msrdsl")
def cli() -> None:
    """msrdsl: differentiable architecture search written as .space files.

    Set MSRDSL_DEBUG=1 to see full tracebacks.
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; user errors print as located messages with exit code 2."""
    from msrdsl.cli.console import run_guarded

    sys.exit(run_guarded(cli, argv, debug=bool(os.environ.get("MSRDSL_DEBUG"))))
