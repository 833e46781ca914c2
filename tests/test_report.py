"""report.html: self-contained, regenerable, and (with Chromium) rendered in a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from layerscope.cli import main
from layerscope.errors import LayerscopeError
from layerscope.show.report import build_report


@pytest.fixture(scope="module")
def run_dir(tiny_checkpoints, synthetic_tsv, tmp_path_factory):
    from layerscope.compare import compare

    out = tmp_path_factory.mktemp("report") / "run"
    compare(tiny_checkpoints["base"], tiny_checkpoints["perturbed"], corpus=f"tsv:{synthetic_tsv}", output_dir=out,
            regression=False)
    return out


def test_report_is_self_contained(run_dir):
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    images = re.findall(r'<img[^>]+src="([^"]+)"', text)
    assert len(images) >= 6 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(?!data:)', text), "no external resources"
    for needle in ("Provenance", "content hash", "Δ retrieval", "shuffled", "layer 0 = embedding output"):
        assert needle in text, needle


def test_report_command_regenerates(run_dir):
    (run_dir / "report.html").unlink()
    assert main(["--quiet", "report", str(run_dir)]) == 0
    assert (run_dir / "report.html").read_text(encoding="utf-8") == build_report(run_dir)


def test_report_on_a_non_run_directory(tmp_path):
    with pytest.raises(LayerscopeError, match="no run.json, gains.json or coefficients.csv"):
        build_report(tmp_path)
    assert main(["--quiet", "report", str(tmp_path)]) == 2


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="Chromium not installed")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    """Figures decode and nothing is wider than the page, as measured by the browser itself."""
    probe = """<script>window.addEventListener('load', () => {
      const imgs = [...document.images];
      const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
      const overflow = document.documentElement.scrollWidth > window.innerWidth + 1;
      document.title = `RESULT images=${imgs.length} broken=${broken} overflow=${overflow}`;
    });</script>"""
    page = tmp_path / "probe.html"
    page.write_text((run_dir / "report.html").read_text(encoding="utf-8").replace("</body>", probe + "</body>"),
                    encoding="utf-8")
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900", "--virtual-time-budget=5000",
               "--dump-dom", page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    match = re.search(r"<title>RESULT images=(\d+) broken=(\d+) overflow=(\w+)</title>", result.stdout)
    assert match, result.stderr[-2000:]
    assert int(match.group(1)) >= 6 and match.group(2) == "0" and match.group(3) == "false"


def test_gains_and_regress_directories_get_reports(tmp_path):
    from pathlib import Path

    fixture = Path(__file__).parent / "fixtures" / "gains" / "wide_small.csv"
    import pandas as pd

    methods = [m for m in pd.read_csv(fixture)["method"].unique() if m != "baseline"]
    gains_dir = tmp_path / "gains"
    assert main(["--quiet", "gains", str(fixture), "--baseline", "baseline", "--method", methods[0],
                 "-o", str(gains_dir)]) == 0
    text = (gains_dir / "report.html").read_text(encoding="utf-8")
    assert "layerscope gains" in text and "data:image/png;base64," in text and "below / within / above" in text
    assert build_report(gains_dir) == text
