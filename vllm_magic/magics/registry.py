"""The ``%vllm`` commands: each declared once with its argument parser, so help is generated.

``%vllm help`` lists them, ``%vllm help NAME`` or ``%vllm NAME -h`` shows one, and ``%vllm?`` shows
the same synopsis. A command that takes a cell (``%%vllm complete``) gets the cell as ``args.cell``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from IPython.core.error import UsageError

from .notebook import split_words

if TYPE_CHECKING:
    from . import VLLMMagics

Argument = tuple[tuple[str, ...], dict[str, Any]]
Run = Callable[["VLLMMagics", argparse.Namespace], Any]


def arg(*flags: str, **kwargs: Any) -> Argument:
    return flags, kwargs


CONVERSATION = arg("-c", "--conversation", default="default", metavar="NAME", help="a named side conversation")


class HelpShown(Exception):
    """``-h`` printed a command's help; nothing else is done."""


class Parser(argparse.ArgumentParser):
    """argparse that reports mistakes as a short UsageError and never exits the kernel."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}. `{self.prog} -h` shows its options.")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message)
        raise HelpShown


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    arguments: tuple[Argument, ...]
    run: Run
    usage: str | None = None
    """For commands whose line is not split into words (a Python expression comes first)."""
    cell: bool = False
    """Takes the cell below ``%%vllm NAME`` as its input."""

    def parser(self) -> Parser:
        parser = Parser(prog=f"%%vllm {self.name}" if self.cell else f"%vllm {self.name}", description=self.summary,
                        usage=f"%(prog)s {self.usage}" if self.usage else None,
                        argument_default=argparse.SUPPRESS if self.usage else None)
        for flags, kwargs in self.arguments:
            parser.add_argument(*flags, **kwargs)
        return parser

    def synopsis(self) -> str:
        usage = " ".join(self.parser().format_usage().split()).removeprefix("usage: ").replace(" [-h]", "")
        return f"{usage}\n      {self.summary}"


COMMANDS: dict[str, Command] = {}


def command(name: str, summary: str, *arguments: Argument, usage: str | None = None,
            cell: bool = False) -> Callable[[Run], Run]:
    """Register ``%vllm name`` (``%%vllm name`` with ``cell``): ``summary`` is its one-line help,
    ``arguments`` its parser's."""

    def register(run: Run) -> Run:
        COMMANDS[name] = Command(name, summary, arguments, run, usage, cell)
        return run

    return register


def takes_cell(line: str) -> bool:
    """Whether ``%%vllm LINE`` runs a command on its cell (``complete``) rather than a chat."""
    found = COMMANDS.get(line.strip().partition(" ")[0])
    return found is not None and found.cell


def run_line(magics: VLLMMagics, line: str, cell: str | None = None) -> Any:
    """Run ``%vllm LINE``, or ``%%vllm LINE`` over ``cell`` for a command that takes one."""
    name, _, rest = line.strip().partition(" ")
    if not name:
        name = "status"
    if name not in COMMANDS:
        raise UsageError(f"`%vllm {name}` is not a command. Commands: {', '.join(COMMANDS)}. "
                         "`%vllm help` describes them.")
    found = COMMANDS[name]
    try:
        if found.usage:  # the raw rest: the command splits off its own options
            return found.run(magics, argparse.Namespace(line=rest))
        args = found.parser().parse_args(split_words(rest))
        if found.cell:
            args.cell = _the_cell(found, cell)
        return found.run(magics, args)
    except HelpShown:
        return None


def _the_cell(found: Command, cell: str | None) -> str:
    if cell is None:
        raise UsageError(f"`%%vllm {found.name}` works on a cell: write it as the cell's first line and the text "
                         "below it.")
    return cell


def synopsis(usage: bool = True) -> str:
    """The commands, each with its usage line (building every parser: ``%vllm help``) or without it
    (the magic's docstring, written as the extension loads)."""
    lines = ["Line: ``%vllm COMMAND ...``; cell: ``%%vllm [options]`` (the same as ``%%chat``), or "
             "``%%vllm complete [options]`` (a base model continues the cell's text).", "",
             "Commands::", ""]
    lines += [f"  {c.synopsis()}" if usage else f"  {'%%' if c.cell else '%'}vllm {c.name}: {c.summary}"
              for c in COMMANDS.values()]
    lines += ["", "``%vllm help NAME`` or ``%vllm NAME -h`` shows a command's options; ``%%chat?`` the cell's."]
    return "\n".join(lines)


@command("help", "list the commands, or show one command's options", arg("name", nargs="?"))
def _help(magics: VLLMMagics, args: argparse.Namespace) -> None:
    if args.name is None:
        print(synopsis())
    elif args.name not in COMMANDS:
        raise UsageError(f"`{args.name}` is not a command. Commands: {', '.join(COMMANDS)}.")
    else:
        COMMANDS[args.name].parser().print_help()
