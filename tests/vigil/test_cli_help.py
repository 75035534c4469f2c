"""The first-run surface of `vigil`: where to start, --version, help on every option,
--config and -v before or after the command, reading a local store folder."""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import pytest

from vigil.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser, path: str = "vigil"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_of_every_command_has_a_help_text() -> None:
    missing = [f"{path}: {'/'.join(a.option_strings) or a.dest}"
               for path, parser in _parsers(build_parser()) for a in parser._actions
               if not isinstance(a, argparse._SubParsersAction) and not a.help]
    assert missing == []


def test_help_says_where_to_start_and_version_exists(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--help"])
    assert done.value.code == 0 and "vigil demo" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--version"])
    assert capsys.readouterr().out.startswith("vigil ")


@pytest.mark.parametrize("argv", [["--config", "c.yaml", "-v", "scenes"],
                                  ["scenes", "--config", "c.yaml", "-v"],
                                  ["alerts", "list", "--config", "c.yaml", "-v"]])
def test_config_and_verbose_work_before_and_after_the_command(argv) -> None:
    args = build_parser().parse_args(argv)
    assert args.config == Path("c.yaml") and args.verbose is True


def test_options_before_the_command_are_not_reset_by_it() -> None:
    args = build_parser().parse_args(["--config", "c.yaml", "scenes"])
    assert args.config == Path("c.yaml") and args.verbose is False


def test_alerts_list_reads_a_store_folder(tmp_path: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["alerts", "list", "--store-dir", str(tmp_path)]) == 0
    assert out.getvalue() == ""  # an empty store: nothing listed, no error
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["alerts", "list", "--store-dir", str(tmp_path / "absent")]) == 2
    assert "--store-dir" in err.getvalue() and "no such folder" in err.getvalue()
