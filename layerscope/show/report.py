"""report.html: one self-contained page per run directory (figures embedded, no external files).

It is rebuilt from what the run directory holds (run.json, metrics.csv, figures/, regression/),
so ``layerscope report RUN_DIR`` can regenerate it at any time.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from ..errors import LayerscopeError
from ..outputs import atomic_write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2327;background:#fafafa}
main{max-width:1200px;margin:0 auto;padding:1.2rem 1.5rem 3rem}
h1{font-size:1.5rem;margin:.3rem 0}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.meta{color:#555;font-size:.9rem}figure{margin:1rem 0;background:#fff;border:1px solid #e3e3e3;padding:.5rem;overflow-x:auto}
figure img{max-width:100%;height:auto;display:block}figcaption{font-size:.85rem;color:#444;margin-top:.3rem}
table{border-collapse:collapse;font-size:.85rem;background:#fff;margin:.5rem 0;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right;white-space:nowrap}th{background:#f0f0f0}
td.l,th.l{text-align:left}pre{background:#fff;border:1px solid #e3e3e3;padding:.6rem;overflow-x:auto;font-size:.8rem}
.pos{color:#b2182b}.neg{color:#2166ac}.noise{color:#9a9a9a}details{margin:.5rem 0}
"""

CAPTIONS = {
    "heatmap_cka": "Debiased linear CKA between pivot and target sentence vectors, per layer (rows) and language "
                   "(columns). Left: base; middle: realigned (same colour scale); right: Δ realigned − base "
                   "(diverging, centred at 0).",
    "heatmap_retrieval": "Top-1 translation retrieval accuracy (mean of both directions) per layer and language.",
    "heatmap_retrieval_centered": "Retrieval accuracy after removing each language's mean vector.",
    "heatmap_cka_linear": "Plain linear CKA: biased upward when sentences are few relative to the width; read with "
                          "the debiased values.",
    "layer_curves": "Per-layer mean over languages (band: ± one standard deviation); dotted: chance level (CKA: shuffled pairs, mean over the derangements; retrieval: 1/n).",
    "heatmap_probe_accuracy": "Linear probe accuracy per layer (rows) and language (columns): classifiers fitted on "
                              "the source language, evaluated zero-shot; the source column is its held-out split.",
    "probe_curves": "Probe accuracy per layer for each language, with 95 % bootstrap intervals over sentences.",
    "drift": "Left: how far each language's representations moved (CKA base vs realigned; 1 = unchanged). "
             "Right: relative weight change per block (0 = frozen).",
}


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _figure(path: Path, caption: str | None = None) -> str:
    caption = caption or CAPTIONS.get(path.stem, path.stem.replace("_", " "))
    return f"<figure>{_image(path)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _table(frame: pd.DataFrame, *, float_format: str = "{:+.3f}", signed: bool = True) -> str:
    head = "".join(f'<th class="{"l" if i == 0 else ""}">{html.escape(str(c))}</th>' for i, c in enumerate(frame.columns))
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for i, value in enumerate(row):
            if isinstance(value, float):
                text = float_format.format(value) if pd.notna(value) else "–"
                klass = ("pos" if value > 0 else "neg" if value < 0 else "") if signed else ""
                cells.append(f'<td class="{klass}">{text}</td>')
            else:
                cells.append(f'<td class="{"l" if i == 0 else ""}">{html.escape(str(value))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _delta_table(metrics: pd.DataFrame, metric: str) -> str:
    """Δ per language (rows) and layer (columns); only changes beyond noise are coloured."""
    from ..stats.noise import BEYOND, judge_deltas

    judged = judge_deltas(metrics, metric)
    if judged.empty:
        return ""
    layers = sorted(int(layer) for layer in judged["layer"].unique())
    cells = {(str(r.lang), int(r.layer)): (float(r.value), r.verdict) for r in judged.itertuples()}
    head = '<th class="l">lang</th>' + "".join(f"<th>{'emb' if c == 0 else f'L{c}'}</th>" for c in layers)
    rows = []
    for lang in sorted({lang for lang, _ in cells}):
        tds = [f'<td class="l">{html.escape(lang)}</td>']
        for layer in layers:
            value, verdict = cells.get((lang, layer), (float("nan"), ""))
            if pd.isna(value):
                tds.append("<td>–</td>")
                continue
            klass = ("pos" if value > 0 else "neg" if value < 0 else "") if verdict == BEYOND else "noise"
            tds.append(f'<td class="{klass}">{value:+.3f}</td>')
        rows.append("<tr>" + "".join(tds) + "</tr>")
    legend = ('<p class="meta">coloured: beyond noise (interval excludes 0, or, without one, larger than the '
              'shuffled baseline\'s spread); <span class="noise">grey: within noise</span></p>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{legend}"


def _provenance(run: dict) -> str:
    rows = [
        ("command", " ".join(run.get("command") or []) or "(Python API)"),
        ("pivot", run.get("pivot", "")),
        ("languages", ", ".join(run.get("languages", []))),
        ("corpus", f"{run.get('corpus', {}).get('spec', '')} (hash {run.get('corpus', {}).get('hash', '')})"),
        ("sentences per language", ", ".join(f"{k}: {v}" for k, v in (run.get("sentences") or {}).items())),
    ]
    for label, info in (run.get("checkpoints") or {}).items():
        rows.append((f"{label} checkpoint", f"{info.get('source')} (content hash {info.get('content_hash')})"))
    model = run.get("model") or {}
    if model:
        rows.append(("model", f"{model.get('type')}: {model.get('blocks')} blocks, width {model.get('hidden_size')}"))
    rows.append(("seed", str(run.get("seed"))))
    versions = run.get("versions") or {}
    rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    if run.get("git_revision"):
        rows.append(("layerscope revision", run["git_revision"]))
    timings = run.get("timings_s") or {}
    if timings:
        rows.append(("timings (s)", ", ".join(f"{k} {v}" for k, v in timings.items())))
    body = "".join(f'<tr><th class="l">{html.escape(k)}</th><td class="l">{html.escape(str(v))}</td></tr>' for k, v in rows)
    return f"<table>{body}</table>"


def _page(title: str, body: str) -> str:
    title = html.escape(title)
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{CSS}</style></head>"
            f"<body><main>{body}</main></body></html>\n")


def _csv_section(path: Path, heading: str, *, signed: bool = False, max_rows: int = 200) -> str:
    if not path.is_file():
        return ""
    frame = pd.read_csv(path).head(max_rows)
    return f"<h2>{html.escape(heading)}</h2>" + _table(frame, float_format="{:.4g}", signed=signed)


def _text_section(path: Path, heading: str) -> str:
    if not path.is_file():
        return ""
    return f"<h2>{html.escape(heading)}</h2><pre>" + html.escape(path.read_text(encoding="utf-8")) + "</pre>"


def _figures_section(directories: list[Path]) -> str:
    parts = [_figure(png, png.stem.replace("_", " ")) for d in directories if d.is_dir() for png in sorted(d.glob("*.png"))]
    return "<h2>Figures</h2>" + "".join(parts) if parts else ""


def _settings_section(path: Path) -> str:
    if not path.is_file():
        return ""
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return ""
    rows = "".join(f'<tr><th class="l">{html.escape(str(k))}</th><td class="l">'
                   f'{html.escape(" ".join(v) if k == "command" and isinstance(v, list) else json.dumps(v, default=str))}'
                   f"</td></tr>" for k, v in settings.items())
    return f"<h2>Provenance</h2><table>{rows}</table>"


def _gains_report(run_dir: Path, name: str) -> str:
    body = [f"<h1>layerscope gains: {html.escape(name)}</h1>",
            '<p class="meta">per language and method: mean over seeds, Δ to the baseline, and the count of '
            "languages below / within / above the baseline's one-standard-deviation band</p>",
            _text_section(run_dir / "table.txt", "Paper-style table"),
            _csv_section(run_dir / "counts.csv", "Languages below / within / above the baseline band"),
            _figures_section([run_dir / "figures", run_dir]),
            _settings_section(run_dir / "gains.json")]
    return _page(f"layerscope gains – {name}", "\n".join(body))


def _regression_report(run_dir: Path, name: str) -> str:
    body = [f"<h1>layerscope regress: {html.escape(name)}</h1>",
            _text_section(run_dir / "summary.txt", "Summary"),
            _csv_section(run_dir / "coefficients.csv", "Coefficients", signed=True),
            _csv_section(run_dir / "spearman.csv", "Spearman correlations (Holm-corrected)", signed=True),
            _figures_section([run_dir / "figures", run_dir]),
            _settings_section(run_dir / "settings.json")]
    return _page(f"layerscope regress – {name}", "\n".join(body))


def build_report(run_dir: str | Path, *, name: str | None = None) -> str:
    """The HTML text of the report for ``run_dir`` (a compare, gains or regress directory).

    ``name`` is the run's name in titles (default: the directory's name; a run being assembled
    in a staging directory passes its final name).
    """
    run_dir = Path(run_dir)
    name = name or run_dir.resolve().name
    run_path = run_dir / "run.json"
    if not run_path.is_file():
        if (run_dir / "gains.json").is_file():
            return _gains_report(run_dir, name)
        if (run_dir / "coefficients.csv").is_file():
            return _regression_report(run_dir, name)
        raise LayerscopeError("not a layerscope run directory (no run.json, gains.json or coefficients.csv)",
                              source=run_dir)
    from ..corpora.tables import read_json_object

    run = read_json_object(run_path)
    job = run.get("job", "run")
    parts = [f"<h1>layerscope {html.escape(job)}: {html.escape(name)}</h1>"]
    parts.append(f'<p class="meta">pivot {html.escape(str(run.get("pivot", "")))} · '
                 f'{len(run.get("languages", []))} languages · layer 0 = embedding output, layer i = output of block i</p>')
    summary = run_dir / "summary.txt"
    if summary.is_file():
        parts.append("<h2>Summary</h2><pre>" + html.escape(summary.read_text(encoding="utf-8")) + "</pre>")
    figures = run_dir / "figures"
    ordered = ["heatmap_retrieval", "heatmap_cka", "layer_curves", "drift", "heatmap_retrieval_centered",
               "heatmap_cka_linear"]
    pngs = {p.stem: p for p in figures.glob("*.png")} if figures.is_dir() else {}
    if pngs:
        parts.append("<h2>Per layer and language</h2>")
        for stem in ordered + sorted(set(pngs) - set(ordered)):
            if stem in pngs and not stem.startswith("regression"):
                parts.append(_figure(pngs[stem]))
    metrics_path = run_dir / "metrics.csv"
    if metrics_path.is_file():
        metrics = pd.read_csv(metrics_path)
        for metric in ("retrieval", "cka", "probe_accuracy"):
            table = _delta_table(metrics, metric)
            if table:
                parts.append(f"<h2>Δ {metric} (realigned − base) per language and layer</h2>{table}")
    regression = run_dir / "regression"
    if regression.is_dir():
        parts.append("<h2>Gain regression on typological distance</h2>")
        text = regression / "summary.txt"
        if text.is_file():
            parts.append("<pre>" + html.escape(text.read_text(encoding="utf-8")) + "</pre>")
        for png in sorted(regression.glob("*.png")):
            parts.append(_figure(png, png.stem.replace("_", " ")))
    parts.append("<h2>Provenance</h2>" + _provenance(run))
    return _page(f"layerscope {job} – {name}", "\n".join(parts))


def write_report(run_dir: str | Path, *, name: str | None = None) -> Path:
    """Write ``report.html`` into ``run_dir`` (atomically) and return its path."""
    run_dir = Path(run_dir)
    return atomic_write_text(run_dir / "report.html", build_report(run_dir, name=name))
