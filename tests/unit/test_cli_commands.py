"""`pgqueue COMMAND` builds the parser of its own command only: the same options, help and
errors as the parser of every command, without importing the other commands' modules."""

from __future__ import annotations

import argparse

import pytest

from pgqueue.cli import COMMANDS, GROUPS, build_parser


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_command_is_mapped_to_the_module_that_registers_it() -> None:
    registered = {
        name: group for group in GROUPS for name in _commands(build_parser(name_of(group)))
    }
    assert registered == COMMANDS
    assert list(_commands(build_parser())) == list(COMMANDS)


def name_of(group: str) -> str:
    return next(command for command, module in COMMANDS.items() if module == group)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_commands_own_parser_gives_the_same_help(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    alone = _commands(build_parser(command))[command]
    among_all = _commands(build_parser())[command]
    assert alone.format_help() == among_all.format_help()
