"""Building the ``biofm`` parser imports no heavy library; help still lists every subcommand."""

from __future__ import annotations

import subprocess
import sys

import pytest

from biofm.cli import data as data_cli
from biofm.cli import idr as idr_cli
from biofm.cli.main import SUBCOMMANDS, main

HEAVY = ("torch", "pandas", "sklearn", "zarr", "scipy", "matplotlib")


def test_build_parser_imports_nothing_heavy() -> None:
    code = (
        "import biofm.cli.main as m; m.build_parser(); import sys; "
        f"print(sorted(k for k in {HEAVY!r} if k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_top_level_names_still_resolve() -> None:
    code = (
        "import biofm; assert callable(biofm.load_model) and callable(biofm.create_model) "
        "and callable(biofm.list_models); print(biofm.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip()


@pytest.mark.parametrize("argv", [["--help"], ["embed", "--help"], ["eval", "knn", "--help"]])
def test_help_exits_zero(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    text = capsys.readouterr().out
    if argv == ["--help"]:
        assert all(name in text for name in SUBCOMMANDS)


def test_written_out_names_match_the_library() -> None:
    from biofm.idr.catalog import ENV_VAR
    from biofm.io.filesets import PRESETS, SPECIAL_PATTERNS

    assert set(data_cli.PATTERN_NAMES) == {*SPECIAL_PATTERNS, *PRESETS}
    assert idr_cli.CATALOG_ENV_VAR == ENV_VAR
