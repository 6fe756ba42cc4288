"""`star report`: one self-contained HTML file per run, readable offline.

The page embeds plotly.js itself (gzip-compressed and base64-encoded, unpacked in the browser with
the standard DecompressionStream), so it needs no network and no CDN, and stays under 5 MB: the raw
plotly.js bundle alone is about 4.8 MB.

Plots: the Pareto front for every pair of objectives (and in 3-D for the first three), hypervolume
after each evaluation, a layout map of the front (one row per member, one cell per block, coloured by
operator, FFN width in the cell), and per-category suite scores of the front.  The presets the search
was seeded with are marked on every plot.  Hovering a point shows its genome id, its rung and its
numbers.  The front is made at the top rung only; genomes that stopped at a lower rung are drawn as
their own series, labelled with their rung, and never count for or against the front: their quality
comes from less training.
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import json
from itertools import combinations
from typing import Any

from star.arch import MIXERS, ArchConfig, layout_letter
from star.evolution import Archive, Candidate
from star.objectives import OBJECTIVES, Normaliser, format_value
from star.pareto import hypervolume
from star.queries import best_per_genome, front_rows, top_rung
from star.store import EVALUATIONS, RunStore

OPERATORS = tuple(MIXERS)  # every mixer kind, in the registry's order; a kind this version lacks shows as the last
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
OPERATOR_COLOURS = tuple("#dddddd" if kind == "identity" else _PALETTE[i % len(_PALETTE)]
                         for i, kind in enumerate(OPERATORS))
FRONT_COLOUR, OTHER_COLOUR, SEED_COLOUR = "#ff7f0e", "#b0b0b0", "#000000"


def _scale(name: str) -> tuple[float, str]:
    """Divisor and axis label that make an objective readable."""
    if name in ("params",):
        return 1e6, "parameters (M)"
    if name in ("cache_bytes", "peak_memory"):
        return 2**20, f"{name.replace('_', ' ')} (MiB)"
    unit = OBJECTIVES[name].unit if name in OBJECTIVES else ""
    return 1.0, f"{name}{f' ({unit})' if unit and unit != 'score' else ''}"


def hypervolume_trace(rows: list[dict[str, Any]], normaliser: Normaliser) -> list[float]:
    """Hypervolume of the first rung's feasible front (the rung every genome has: scores from
    different rungs are not compared), after every evaluation."""
    archive, trace, current = Archive(), [], 0.0
    for row in rows:
        if row["status"] == "ok" and row["rung"] == 0:
            archive.add(Candidate(row["genome_id"], (), 0, normaliser.point(row), float(row["violation"])))
            current = hypervolume([c.point for c in archive.front], normaliser.reference)
        trace.append(current)
    return trace


@functools.cache
def _plotly_bundle() -> str:
    """plotly.js, gzip-compressed (deterministically: mtime 0) and base64-encoded."""
    from plotly.offline import get_plotlyjs

    return base64.b64encode(gzip.compress(get_plotlyjs().encode(), compresslevel=9, mtime=0)).decode()


def _hover(objectives: list[str]) -> str:
    lines = ["<b>%{customdata[0]}</b>", "%{customdata[1]}", "%{customdata[2]}"]
    lines += [f"{name}: %{{customdata[{i + 3}]}}" for i, name in enumerate(objectives)]
    return "<br>".join(lines) + "<extra>%{fullData.name}</extra>"


def _rung_label(row: dict[str, Any]) -> str:
    return f"rung {row['rung']}" + (f" ({row['fidelity']})" if row.get("fidelity") else "")


def _layout_string(row: dict[str, Any]) -> str:
    return "".join(layout_letter(k) for k in row["layer_types"].split(","))


def _config(store: RunStore, row: dict[str, Any]) -> ArchConfig:
    """The evaluated architecture, parsed and checked: a damaged config_json is one error line naming
    the file, the row and the column, not a JSON or key error half-way through the report."""
    return ArchConfig.from_json(row["config_json"], source=f"{store.path / EVALUATIONS}: row with eval_index "
                                                           f"{row['eval_index']}, column 'config_json'")


def _custom(rows: list[dict[str, Any]], objectives: list[str]) -> list[list[str]]:
    return [[r["genome_id"], _layout_string(r), _rung_label(r), *(format_value(o, r[o]) for o in objectives)]
            for r in rows]


class Report:
    """The figures of one run, as plain plotly JSON (no plotly Python objects needed)."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.settings = store.manifest["settings"]
        self.objectives: list[str] = list(self.settings["objectives"])
        self.normaliser = Normaliser.from_dict(store.manifest["normaliser"])
        self.evaluated = best_per_genome(store.rows)
        self.top = top_rung(store.rows)
        self.front = front_rows(store, self.top)
        front_ids = {r["genome_id"] for r in self.front}
        self.others = [r for r in self.evaluated if r["genome_id"] not in front_ids and r["rung"] == self.top]
        self.lower = [r for r in self.evaluated if r["rung"] < self.top]  # stopped below the front's rung
        # A seeded preset may have been promoted since: find it by genome, show its best evaluation.
        self.seed_names = {r["genome_id"]: str(r["origin"]).removeprefix("seed:") for r in store.rows
                           if str(r["origin"]).startswith("seed:")}
        self.seeds = [r for r in self.evaluated if r["genome_id"] in self.seed_names]

    def figures(self) -> dict[str, dict[str, Any]]:
        figures: dict[str, dict[str, Any]] = {}
        for x, y in combinations(self.objectives, 2):
            figures[f"front-{x}-{y}"] = self._scatter2d(x, y)
        if len(self.objectives) >= 3:
            figures["front-3d"] = self._scatter3d(*self.objectives[:3])
        figures["hypervolume"] = self._hypervolume()
        figures["layout-map"] = self._layout_map()
        shown = self.front[:12] + self.seeds
        categories = [c for c, _ in self.store.columns
                      if c.startswith("category.") and any(r.get(c) is not None for r in shown)]
        if categories:  # the categories the fidelity measured
            figures["categories"] = self._categories(categories)
        return figures

    def _points(self, rows: list[dict[str, Any]], names: list[str]) -> dict[str, list[float]]:
        axes = {}
        for axis, name in zip(("x", "y", "z"), names, strict=False):
            divisor, _ = _scale(name)
            axes[axis] = [r[name] / divisor for r in rows]
        return axes

    def _traces(self, names: list[str], kind: str) -> list[dict[str, Any]]:
        hover = _hover(self.objectives)
        sizes = (4, 8, 14) if kind == "scatter" else (2, 4, 8)
        top = _rung_label(self.front[0]) if self.front else f"rung {self.top}"
        traces = [
            {"type": kind, "mode": "markers", "name": f"evaluated at {top}", **self._points(self.others, names),
             "customdata": _custom(self.others, self.objectives), "hovertemplate": hover,
             "marker": {"color": OTHER_COLOUR, "size": sizes[0], "opacity": 0.7}},
            {"type": kind, "mode": "markers", "name": f"Pareto set at {top}", **self._points(self.front, names),
             "customdata": _custom(self.front, self.objectives), "hovertemplate": hover,
             "marker": {"color": FRONT_COLOUR, "size": sizes[1], "line": {"width": 1, "color": "#333"}}},
        ]
        for rung in sorted({r["rung"] for r in self.lower}):
            rows = [r for r in self.lower if r["rung"] == rung]
            traces.append({"type": kind, "mode": "markers", "name": f"{_rung_label(rows[0])}: not compared",
                           **self._points(rows, names), "customdata": _custom(rows, self.objectives),
                           "hovertemplate": hover, "marker": {"color": OTHER_COLOUR, "size": sizes[0], "opacity": 0.35,
                                                              "symbol": "circle-open"}})
        for row in self.seeds:
            name = self.seed_names[row["genome_id"]]
            traces.append({"type": kind, "mode": "markers+text", "name": f"seed: {name} ({_rung_label(row)})",
                           **self._points([row], names), "text": [name], "textposition": "top center",
                           "customdata": _custom([row], self.objectives), "hovertemplate": hover,
                           "marker": {"color": SEED_COLOUR, "size": sizes[2],
                                      "symbol": "diamond" if kind == "scatter3d" else "star"}})
        return traces

    def _scatter2d(self, x: str, y: str) -> dict[str, Any]:
        return {"data": self._traces([x, y], "scatter"),
                "layout": {"title": {"text": f"{x} vs {y}"}, "xaxis": {"title": {"text": _scale(x)[1]}},
                           "yaxis": {"title": {"text": _scale(y)[1]}}, "hovermode": "closest",
                           "height": 420, "margin": {"t": 40}}}

    def _scatter3d(self, x: str, y: str, z: str) -> dict[str, Any]:
        scene = {f"{a}axis": {"title": {"text": _scale(n)[1]}} for a, n in zip("xyz", (x, y, z), strict=True)}
        return {"data": self._traces([x, y, z], "scatter3d"),
                "layout": {"title": {"text": f"{x}, {y}, {z}"}, "scene": scene, "height": 560,
                           "margin": {"t": 40, "l": 0, "r": 0, "b": 0}}}

    def _hypervolume(self) -> dict[str, Any]:
        trace = hypervolume_trace(self.store.rows, self.normaliser)
        return {"data": [{"type": "scatter", "mode": "lines+markers", "name": "hypervolume",
                          "x": list(range(1, len(trace) + 1)), "y": trace, "marker": {"size": 3},
                          "hovertemplate": "evaluation %{x}<br>hypervolume %{y:.4f}<extra></extra>"}],
                "layout": {"title": {"text": "hypervolume of the first rung's front after each evaluation"},
                           "xaxis": {"title": {"text": "evaluations"}},
                           "yaxis": {"title": {"text": "hypervolume (normalised, reference 1.1)"}},
                           "height": 360, "margin": {"t": 40}}}

    def _layout_map(self) -> dict[str, Any]:
        rows = self.front + [r for r in self.seeds if r not in self.front]
        labels = [(f"seed: {self.seed_names[r['genome_id']]} ({r['genome_id']})"
                   if r["genome_id"] in self.seed_names else r["genome_id"]) for r in rows]
        z, text = [], []
        for row in rows:
            config = _config(self.store, row)
            kinds = config.layer_types
            z.append([OPERATORS.index(k) if k in OPERATORS else len(OPERATORS) - 1 for k in kinds])
            ffns = [None if b.ffn is None else b.ffn.hidden for b in config.blocks]
            text.append([f"{layout_letter(k)}<br>{f / 1000:.1f}k" if f else layout_letter(k)
                         for k, f in zip(kinds, ffns, strict=True)])
        n = len(OPERATORS)
        colourscale = []
        for i, colour in enumerate(OPERATOR_COLOURS):
            colourscale += [[i / n, colour], [(i + 1) / n, colour]]
        return {"data": [{"type": "heatmap", "z": z, "text": text, "texttemplate": "%{text}",
                          "y": labels, "x": [f"block {i}" for i in range(len(z[0]) if z else 0)],
                          "zmin": -0.5, "zmax": n - 0.5, "colorscale": colourscale, "xgap": 2, "ygap": 2,
                          "colorbar": {"tickvals": list(range(n)), "ticktext": list(OPERATORS)},
                          "hovertemplate": "%{y}<br>%{x}: %{text}<extra></extra>"}],
                "layout": {"title": {"text": "layouts of the Pareto set and the seeds (cell: operator, FFN width)"},
                           "yaxis": {"autorange": "reversed", "automargin": True},
                           "height": max(300, 28 * len(rows) + 120), "margin": {"t": 40}}}

    def _categories(self, categories: list[str]) -> dict[str, Any]:
        rows = self.front[:12] + [r for r in self.seeds if r not in self.front[:12]]
        names = [c.removeprefix("category.") for c in categories]
        data = []
        for row in rows:
            label = (f"seed: {self.seed_names[row['genome_id']]} ({_rung_label(row)})" if row in self.seeds
                     else row["genome_id"])
            data.append({"type": "bar", "name": label, "x": names, "y": [row[c] for c in categories],
                         "hovertemplate": f"{label}<br>%{{x}}: %{{y:.3f}}<extra></extra>"})
        return {"data": data, "layout": {"title": {"text": "suite scores per category (Pareto set and seeds)"},
                                         "barmode": "group", "yaxis": {"title": {"text": "score"}},
                                         "height": 420, "margin": {"t": 40}}}

    def summary_rows(self) -> list[list[str]]:
        rows = []
        for rank, row in enumerate(self.front, 1):
            values = [format_value(o, row[o]) for o in self.objectives]
            rows.append([str(rank), row["genome_id"], _layout_string(row), *values, row["fidelity"] or "static",
                         row["origin"]])
        return rows


def render(store: RunStore) -> str:
    report = Report(store)
    figures = report.figures()
    settings = report.settings
    failed = sum(r["status"] != "ok" for r in store.rows)
    hv = hypervolume_trace(store.rows, report.normaliser)
    facts = [("run", str(store.path)), ("space", settings["space"]), ("objectives", ", ".join(report.objectives)),
             ("constraints", ", ".join(f"{k} <= {v:g}" for k, v in settings["constraints"].items()) or "none"),
             ("evaluations", f"{len(store.rows)} of {settings['budget']} ({failed} failed)"),
             ("Pareto set", f"{len(report.front)} genomes, at rung {report.top} (the top rung reached; genomes "
                            f"that stopped below it are not compared with it)"),
             ("hypervolume (first rung)", f"{hv[-1]:.4f}" if hv else "-"),
             ("seeded presets", ", ".join(settings["seed_presets"]) or "none"), ("seed", str(settings["seed"])),
             ("selection / fidelities", f"{settings['selection']} / {', '.join(settings['fidelities'])}"),
             ("star / created", f"{store.manifest['versions'].get('star', '')} / {store.manifest['created']}")]
    head = ["rank", "genome id", "layout", *report.objectives, "fidelity", "origin"]
    table = "".join(f"<tr>{''.join(f'<td>{html.escape(c)}</td>' for c in row)}</tr>" for row in report.summary_rows())
    divs = "\n".join(f'<div class="plot" id="{name}"></div>' for name in figures)
    return TEMPLATE.format(
        title=html.escape(f"star report: {store.path.name}"),
        facts="".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts),
        head="".join(f"<th>{html.escape(h)}</th>" for h in head), table=table, divs=divs,
        figures=json.dumps(figures, separators=(",", ":")).replace("</", "<\\/"), plotly=_plotly_bundle())


def write_report(store: RunStore, path: str) -> int:
    """Write the report atomically; return its size in bytes."""
    from pathlib import Path

    from star.errors import StarError

    target = Path(path)
    if not target.parent.is_dir():
        raise StarError(f"-o {path}: folder {target.parent} does not exist")
    text = render(store)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
    except OSError as err:
        raise StarError(f"cannot write {path}: {err.strerror or err}") from None
    return len(text.encode())


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ddd; padding: 3px 8px; text-align: left; }}
td {{ font-family: ui-monospace, monospace; }}
.plot {{ margin: 1em 0; border: 1px solid #eee; }}
#status {{ color: #888; }}
</style></head>
<body>
<h1>{title}</h1>
<table>{facts}</table>
<h2>Pareto set</h2>
<table><tr>{head}</tr>{table}</table>
<p id="status">loading plots…</p>
{divs}
<script id="plotly-gzip-base64" type="application/octet-stream">{plotly}</script>
<script>
const FIGURES = {figures};
async function loadPlotly() {{
  const packed = document.getElementById("plotly-gzip-base64").textContent.trim();
  const packedBlob = await (await fetch("data:application/octet-stream;base64," + packed)).blob();
  const stream = packedBlob.stream().pipeThrough(new DecompressionStream("gzip"));
  const code = await new Response(stream).text();
  performance.mark("decompressed");
  const script = document.createElement("script");
  script.textContent = code;
  document.head.appendChild(script);
}}
loadPlotly().then(async () => {{
  performance.mark("plotly-loaded");
  for (const [id, figure] of Object.entries(FIGURES)) {{
    await Plotly.newPlot(id, figure.data, figure.layout, {{responsive: true, displaylogo: false}});
    performance.mark(id);
  }}
  document.getElementById("status").textContent = "";
  document.body.dataset.rendered = "true";
}});
</script>
</body></html>
"""
