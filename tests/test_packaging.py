"""The wheel carries what the package needs at run time (language table, embedded corpus)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from conftest import REPO_ROOT


def test_wheel_ships_data_files(tmp_path):
    pytest.importorskip("hatchling")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(REPO_ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    wheel = next(tmp_path.glob("layerscope-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("layerscope/_data/languages.tsv", "layerscope/_data/sample/parallel.tsv",
                     "layerscope/_data/sample/dict/en-fr.txt", "layerscope/cli.py", "layerscope/commands/compare.py"):
        assert required in names, required
    assert not any(name.startswith(("tests/", "data/")) for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "layerscope = layerscope.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_help_lists_every_command():
    from layerscope.cli import COMMANDS, build_parser

    text = build_parser().format_help()
    for name in ("compare", "demo", "snapshot", "info", "report"):
        assert name in text and name in COMMANDS
    assert "examples:" in text


def test_python_api_names_are_callable_jobs():
    import layerscope
    import layerscope.compare  # noqa: F401  (binding the submodules must not hide the jobs)
    import layerscope.realign  # noqa: F401

    for name in ("compare", "realign", "finetune", "gains", "regress", "run_demo", "load_encoder", "read_corpus"):
        assert callable(getattr(layerscope, name)), name
    assert layerscope.compare.CompareResult.__name__ == "CompareResult"
    assert set(layerscope.__all__) >= {"compare", "realign", "finetune", "regress"}
