"""Every ``pathray`` command line in the README parses as written (commands, options, arguments).

The README is the first thing a new user copies from; an option renamed in the code and not in
the README ("No such option: --requirement") is a defect this test catches. Each command line is
parsed by the real CLI (Click's own parser, not a copy of it) without running it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import typer.main

from pathray.cli import app

README = Path(__file__).resolve().parents[2] / "README.md"


def _command_lines() -> list[list[str]]:
    """The ``pathray ...`` commands of the README's shell blocks, as words (quotes removed)."""
    commands: list[list[str]] = []
    blocks = re.findall(r"```(?:bash|sh|shell|console)?\n(.*?)```", README.read_text(), re.S)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True  # keep OS-1-detail:300,300 whole
            words, current = list(lexer), []
            for word in [*words, ";"]:
                if word in (";", "&&", "||", "|"):
                    if current[:1] == ["pathray"]:
                        commands.append(current)
                    current = []
                else:
                    current.append(word)
    return commands


def _parse(words: list[str]) -> None:
    """Parse ``words`` (after ``pathray``) down to the leaf command, raising on any error."""
    command: click.Command = typer.main.get_command(app)
    path = ["pathray"]
    while True:
        ctx = command.make_context(" ".join(path), list(words), resilient_parsing=False)
        if not isinstance(command, click.Group):
            return
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            return
        name, sub, words = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None, f"{' '.join(path)} has no command {rest[0]}"
        command, path = sub, [*path, name]


COMMANDS = _command_lines()


def test_the_readme_has_commands_to_check() -> None:
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(c[:3]) for c in COMMANDS])
def test_readme_command_parses(words: list[str]) -> None:
    line = shlex.join(words)
    try:
        _parse(words[1:])
    except click.exceptions.Exit:  # --help and the like
        pass
    except click.ClickException as exc:
        pytest.fail(f"README: `{line}` does not parse: {exc.format_message()}")
