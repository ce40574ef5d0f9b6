"""`personas --help`, `personas` alone and `personas COMMAND --help` for every command: usage text, no traceback.

A help string is formatted by argparse with ``%`` directives, so one stray ``%`` in any command's one-line help
once made ``personas --help`` (the first command a newcomer types) end in ``ValueError: incomplete format``. These
run in-process through `personas.cli.main.main` (argparse exits with `SystemExit`), over the commands the parser
itself lists, so a command added later is covered without editing this file.
"""

from __future__ import annotations

import pytest

from personas.cli.main import build_parser, main


def _run(argv, capsys):
    """(exit code, stdout, stderr) of ``personas ARGV``; a Python exception other than SystemExit fails the test."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return list(sub.choices)


def test_top_level_help_lists_every_command(capsys):
    code, out, err = _run(["--help"], capsys)
    assert code == 0, err
    assert out.startswith("usage: personas") and "Traceback" not in out + err
    for command in _commands():
        assert command in out, command


def test_no_arguments_prints_usage_and_exits_2(capsys):
    code, out, err = _run([], capsys)
    assert code == 2  # argparse's exit code for a usage error: the command is required
    assert err.startswith("usage: personas") and "the following arguments are required: command" in err
    assert "Traceback" not in out + err


@pytest.mark.parametrize("command", _commands())
def test_every_command_prints_its_help(command, capsys):
    code, out, err = _run([command, "--help"], capsys)
    assert code == 0, err
    assert out.startswith(f"usage: personas {command}") and "Traceback" not in out + err
    assert "--threads" in out  # the options added to every command are listed too


def test_the_readme_names_the_commands_that_take_dry_run(capsys):
    """The README's list of the commands with ``--dry-run`` is the list the parser has."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    sentence = re.search(r"`--dry-run` \(on ([^)]*)\)", readme)
    assert sentence, "the README no longer says which commands take --dry-run"
    named = set(re.findall(r"`([a-z-]+)`", sentence.group(1)))
    having = {c for c in _commands() if "--dry-run" in _run([c, "--help"], capsys)[1]}
    assert named == having
