import pytest

from pyro_contrast import __version__
from pyro_contrast.cli import build_parser, main


def test_parser_lists_every_command():
    parser = build_parser()
    help_text = parser.format_help()
    for command in ("demo", "bridge", "compare", "diagnose"):
        assert command in help_text


def test_version_and_missing_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == 2


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
