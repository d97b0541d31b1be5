"""Every concrete `trendflow ...` command line in the README's code blocks is accepted by the
command's own argument parser as written: no removed flag, no renamed option, no bad choice.

Commands are parsed, not run (the run-as-written tests for the scheduling, daily, fetch, market
preset and reconcile examples live beside their features). Synopsis lines (`[--opt X]`,
`a|b`) are skipped: they describe syntax, they are not commands to paste.
"""
from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    from flows.cli import COMMANDS

    text = (ROOT / "README.md").read_text()
    commands: list[str] = []
    for block in re.findall(r"```(?:bash|sh|console|bat)?\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.lstrip().startswith("#"):
                continue
            code = line.split(" #")[0]
            for part in re.split(r"&&|;|\|\||\s\|\s", code):
                match = re.search(r"(?:^|[\s/])trendflow\s+(\S.*)$", part.strip())
                if not match:
                    continue
                command = match.group(1).strip()
                if command.split()[0] not in COMMANDS or re.search(r"\[|\w\|\w|\w\|-", command):
                    continue
                commands.append(command)
    return commands


class _Parsed(Exception):
    """Raised instead of running the command once its arguments are parsed."""


def test_the_readme_has_commands_to_check():
    commands = readme_commands()
    assert len(commands) > 30
    assert {c.split()[0] for c in commands} >= {"run", "daily", "signal", "trade", "report", "sweep",
                                                 "execute", "reconcile", "serve", "config", "validate"}


@pytest.mark.parametrize("command", sorted(set(readme_commands())))
def test_readme_command_parses_as_written(command, monkeypatch):
    from flows.cli import main

    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    argv = shlex.split(command)
    if ">" in argv:
        argv = argv[: argv.index(">")]
    try:
        main(argv)
    except _Parsed:
        return
    except SystemExit as exc:
        pytest.fail(f"`trendflow {command}` is rejected by its parser (exit {exc.code})")
    pytest.fail(f"`trendflow {command}` ran without parsing its arguments with argparse")
