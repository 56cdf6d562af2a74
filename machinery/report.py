"""machinery/report.py — the pictures of a run that train.py writes: one self-contained HTML page of SVG charts.

    python -m machinery.report runs/<name>                  # -> runs/<name>/report.html
    python -m machinery.report runs/table-*-s0              # several runs overlaid -> runs/report.html
    python -m machinery.report runs/a runs/b --out cmp.html

A run's numbers live in metrics.jsonl (one record per step) and eval.json (the held-out table).
SD-Zero (arXiv 2604.12002) argues from *learning efficiency*: held-out accuracy against the
generations a method has spent (App. C.2: one generated response = one generation), every method at
the same budget. So every chart has generations used on the x axis, and each run folder is one line:

* Phase-2 reward, the share of training rollouts the verifier accepts (on-policy methods only);
* KL per token between student and teacher (SD-Zero, SDFT; GRPO has no teacher);
* mean response tokens (SRT's in-answer revisions make answers long; Phase 2 should shorten them);
* held-out accuracy, one point per model of the run's table (base at 0, SRT after Phase 1, the
  final model at the end of the budget).

Dashed vertical lines mark teacher syncs (teacher := student, Fig. 5; ``--teacher-sync``).

The page is static (inline CSS and SVG, no scripts, no network, standard library only), so it opens
from disk anywhere. Every string read from a run folder (run names, model labels) passes through
html.escape before it reaches the page: a run folder is data, and data may carry markup.
The same holds for the self-localisation heat map (``selfloc_html``) that evaluate.py --selfloc writes.
"""
from __future__ import annotations

import argparse
import html
import json
import math
import os
import re
import sys

# Eight colours that stay apart on white and for the common forms of colour blindness (Okabe-Ito).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
SMOOTH = 10              # training curves: trailing mean over at most this many steps (one step = 32
                         # rollouts on the toy, so a raw reward curve jitters by about ±0.09); a short
                         # run gets a shorter window (``smoothing``), so that 20 steps are not one flat line
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 560, 260, 64, 14, 28, 40     # one chart, in SVG pixels

# (metrics key, chart title, y label): the training curves drawn from metrics.jsonl
TRAINING = [("reward", "Training reward (share of rollouts verified)", "reward"),
            ("kl", "KL per token, student ‖ teacher", "KL / token"),
            ("response_tokens", "Mean response length", "tokens"),
            ("keyword_rate", "Self-revision keyword rate (Fig. 6)", "share of rollouts")]
# The title of the "kl" chart follows the divergence the runs trained with (metrics' "divergence").
DIVERGENCE_TITLES = {"reverse": "KL per token, student ‖ teacher (reverse, eq. 4)",
                     "forward": "KL per token, teacher ‖ student (forward)"}
# config.json keys that differ between any two runs without making them different experiments.
NOT_A_DIFFERENCE = {"run_name", "runs_dir", "resume", "quiet", "threads", "toy_root", "variant", "report_to"}


# --------------------------------------------------------------------------------------------
# Reading a run folder (everything optional: a run killed early still gets a page)
# --------------------------------------------------------------------------------------------
def load_run(run_dir: str) -> dict:
    """name, metrics records, held-out evaluations and config of one run folder."""
    def path(name):
        p = os.path.join(run_dir, name)
        return p if os.path.exists(p) else None
    return {"name": os.path.basename(os.path.normpath(run_dir)),
            "metrics": _records(path("metrics.jsonl")) if path("metrics.jsonl") else [],
            "evals": json.load(open(path("eval.json"))) if path("eval.json") else {},
            "config": json.load(open(path("config.json"))) if path("config.json") else {},
            "budgets": _table_budgets(path("table.md"))}


def _records(path: str) -> list[dict]:
    out = []
    for line in open(path):
        try:
            out.append(json.loads(line))
        except ValueError:               # a blank line, or the last line cut by a kill mid-write
            pass
    return out


def _table_budgets(path: str | None) -> dict:
    """{model: generations} from table.md's last column: the fallback for runs whose eval.json
    predates its "generations_used" field."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in open(path)] if path else []
    return {c[0]: int(re.match(r"\d+", c[-1]).group()) for c in rows
            if len(c) > 2 and c[0] != "model" and re.match(r"\d+", c[-1])}


def _number(v) -> bool:
    """Only finite numbers reach the drawing code: a field that is text or NaN is skipped, not drawn."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def training_series(run: dict, key: str) -> list[tuple[float, float]]:
    """(generations, trailing mean of ``key``) for every on-policy step that logged a number.

    Only on-policy records (phase "distill": SD-Zero's Phase 2, GRPO, SDFT) carry rewards; SFT
    steps (SRT, RFT) spend no generations while they train, so they would stack on one x value.
    """
    recs = [r for r in run["metrics"] if r.get("phase") == "distill" and _number(r.get("generations"))
            and _number(r.get(key))]
    pts, width = [], smoothing(run)
    for i, r in enumerate(recs):
        window = recs[max(0, i + 1 - width):i + 1]
        pts.append((r["generations"], sum(w[key] for w in window) / len(window)))
    return pts


def smoothing(run: dict) -> int:
    """The trailing window of a run's curves: SMOOTH steps, or a tenth of a short run (at least 1)."""
    steps = sum(r.get("phase") == "distill" for r in run["metrics"])
    return max(1, min(SMOOTH, steps // 10))


def kl_title(runs: list[dict]) -> str:
    """The KL chart's title from the divergences the runs logged; one neutral title if they differ."""
    kinds = {r.get("divergence") for run in runs for r in run["metrics"] if r.get("divergence")}
    if len(kinds) != 1:
        return "Divergence per token, student vs teacher" + (" (see legend)" if kinds else "")
    kind = kinds.pop()
    return DIVERGENCE_TITLES.get(kind, f"Divergence per token: {kind} (forward weight) KL")


def label(run: dict) -> str:
    """A run's legend entry: its method and the settings it changed (config.variant)."""
    cfg = run["config"]
    return " ".join(str(x) for x in (cfg.get("method", "?"), cfg.get("variant", "")) if x)


def differences(runs: list[dict]) -> str:
    """HTML list of the config settings that differ between the runs (nothing for a single run)."""
    if len(runs) < 2:
        return ""
    keys = sorted({k for r in runs for k in r["config"]} - NOT_A_DIFFERENCE)
    rows = [k for k in keys if len({json.dumps(r["config"].get(k), sort_keys=True) for r in runs}) > 1]
    if not rows:
        return "<p class=n>The runs' settings are identical (apart from names and folders).</p>"
    head = "<tr><th>setting</th>" + "".join(f"<th>{html.escape(r['name'])}</th>" for r in runs) + "</tr>"
    body = "".join("<tr><td>--" + html.escape(k.replace("_", "-")) + "</td>" + "".join(
        f"<td>{html.escape(str(r['config'].get(k, '-')))}</td>" for r in runs) + "</tr>" for k in rows)
    return f"<h2>Differences</h2><table>{head}{body}</table>"


def heldout_series(run: dict) -> list[tuple[float, float, str]]:
    """(generations used, held-out accuracy in %, model label), sorted by generations."""
    pts = []
    for label, ev in run["evals"].items():
        x = ev.get("generations_used", run["budgets"].get(label))
        acc = ev.get(f"avg@{ev.get('k', 1)}")
        if _number(x) and _number(acc):
            pts.append((x, 100 * acc, label))
    return sorted(pts, key=lambda p: p[0])


def sync_marks(run: dict) -> list[tuple[float, int]]:
    """(generations, sync number) at each step whose teacher_syncs counter went up."""
    marks, last = [], 0
    for r in run["metrics"]:
        n = r.get("teacher_syncs")
        if isinstance(n, int) and n > last and _number(r.get("generations")):
            marks.append((r["generations"], n))
            last = n
    return marks


# --------------------------------------------------------------------------------------------
# Drawing: one SVG line chart, by hand (the page must need nothing but a browser)
# --------------------------------------------------------------------------------------------
def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values (steps of 1, 2 or 5 times a power of ten) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 5, 10) if s * mag >= raw)
    first = math.floor(lo / step) * step
    return [first + i * step for i in range(int(math.ceil((hi - first) / step - 1e-9)) + 1)]


def svg_chart(title: str, ylabel: str, series: list[dict], marks: list[dict], y_range=None) -> str:
    """A line chart: ``series`` = [{label, color, points [(x, y)], dots}], ``marks`` = [{x, color, tip}].

    Every series is one <polyline> (a one-point series too, so each run appears in every chart it
    has data for), with <circle>s where ``dots`` is set. Tooltips are SVG <title> elements: they
    need no script. All text is escaped here, at the one place it enters the markup.
    """
    xs = [p[0] for s in series for p in s["points"]] + [m["x"] for m in marks]
    ys = [p[1] for s in series for p in s["points"]]
    head = f"<svg class=chart viewBox='0 0 {W} {H}' role=img><title>{html.escape(title)}</title>"
    head += f"<text x={PAD_L} y=16 class=t>{html.escape(title)}</text>"
    if not ys:
        return head + f"<text x={W // 2} y={H // 2} text-anchor=middle class=a>no data in these runs</text></svg>"
    x_ticks = nice_ticks(0, max(xs + [1]))
    y_ticks = nice_ticks(*(y_range or (min(0.0, min(ys)), max(ys))))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def px(x):                                             # data -> SVG pixels (y grows downwards)
        return PAD_L + (x - x0) / (x1 - x0) * (W - PAD_L - PAD_R)

    def py(y):
        return H - PAD_B - (y - y0) / ((y1 - y0) or 1) * (H - PAD_T - PAD_B)
    out = [head]
    for t in x_ticks:                                      # grid and tick labels
        out.append(f"<line x1={px(t):.1f} x2={px(t):.1f} y1={PAD_T} y2={H - PAD_B} class=g />"
                   f"<text x={px(t):.1f} y={H - PAD_B + 14} text-anchor=middle class=a>{t:.4g}</text>")
    for t in y_ticks:
        out.append(f"<line x1={PAD_L} x2={W - PAD_R} y1={py(t):.1f} y2={py(t):.1f} class=g />"
                   f"<text x={PAD_L - 4} y={py(t) + 4:.1f} text-anchor=end class=a>{t:.4g}</text>")
    out.append(f"<text x={(W + PAD_L) / 2:.0f} y={H - 6} text-anchor=middle class=a>generations used</text>"
               f"<text transform='translate(12 {(H - PAD_B + PAD_T) / 2:.0f}) rotate(-90)' "
               f"text-anchor=middle class=a>{html.escape(ylabel)}</text>")
    for m in marks:                                        # teacher syncs: dashed, in the run's colour
        out.append(f"<line x1={px(m['x']):.1f} x2={px(m['x']):.1f} y1={PAD_T} y2={H - PAD_B} "
                   f"stroke='{m['color']}' stroke-dasharray='4 3' class=m><title>"
                   f"{html.escape(m['tip'])}</title></line>")
    for s in series:
        pts = " ".join(f"{px(p[0]):.1f},{py(p[1]):.1f}" for p in s["points"])
        out.append(f"<polyline points='{pts}' fill=none stroke='{s['color']}' stroke-width=1.6>"
                   f"<title>{html.escape(s['label'])}</title></polyline>")
        for x, y, *name in (s["points"] if s.get("dots") else []):    # held-out points, named
            tip = html.escape(f"{s['label']}: {' '.join(map(str, name))} {y:.1f} at {x:g} generations")
            out.append(f"<circle cx={px(x):.1f} cy={py(y):.1f} r=3.5 fill='{s['color']}'><title>{tip}"
                       "</title></circle>" + (f"<text x={px(x) + 5:.1f} y={py(y) - 6:.1f} class=a>"
                       f"{html.escape(' '.join(map(str, name)))}</text>" if len(series) == 1 else ""))
    return "\n".join(out) + "</svg>"


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------
CSS = ("body{font-family:sans-serif;max-width:1180px;margin:1.5em auto;color:#222}"
       ".charts{display:flex;flex-wrap:wrap;gap:12px}.chart{width:570px;border:1px solid #ddd}"
       ".t{font-size:13px;font-weight:bold}.a{font-size:11px;fill:#444}.g{stroke:#eee}"
       ".m{stroke-width:1.2}table{border-collapse:collapse;font-size:13px;margin:1em 0}"
       "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}td:first-child,td:nth-child(2)"
       "{text-align:left}.sw{display:inline-block;width:14px;height:4px;margin-right:6px;"
       "vertical-align:middle}.n{color:#555;font-size:13px}")


def _pct(v, scale=100) -> str:
    return f"{scale * v:.1f}" if _number(v) else "n/a"


def summary_rows(runs: list[dict]) -> str:
    """The held-out table of every run, as HTML: own-answer and shared-pool revision side by side."""
    rows = ["<tr><th>run</th><th>model</th><th>avg@k</th><th>correction (own answers)</th>"
            "<th>pool correction</th><th>pool break</th><th>mean tokens</th><th>generations used</th></tr>"]
    for run in runs:
        for x, acc, label in heldout_series(run):
            ev = run["evals"][label]
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
                run["name"], label, f"{acc:.1f}", _pct(ev.get("revision", {}).get("correction_rate")),
                _pct(ev.get("pool", {}).get("correction_rate")), _pct(ev.get("pool", {}).get("break_rate")),
                _pct(ev.get("mean_tokens"), 1), x)) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def render(runs: list[dict]) -> str:
    """The whole HTML page for one or several runs (one colour per run, in the order given)."""
    color = {id(r): PALETTE[i % len(PALETTE)] for i, r in enumerate(runs)}
    marks = [{"x": x, "color": color[id(r)], "tip": f"{r['name']}: teacher sync {n}"}
             for r in runs for x, n in sync_marks(r)]
    charts = []
    for key, title, ylabel in TRAINING:
        title = kl_title(runs) if key == "kl" else title
        series = [{"label": r["name"], "color": color[id(r)], "points": training_series(r, key)}
                  for r in runs]
        series = [s for s in series if s["points"]]
        charts.append(svg_chart(title, ylabel, series, marks if series else [],
                                (0.0, 1.0) if key == "reward" else None))
    acc = [{"label": r["name"], "color": color[id(r)], "dots": True, "points": heldout_series(r)}
           for r in runs]
    charts.append(svg_chart("Held-out accuracy of each model in the run's table", "accuracy %",
                            [s for s in acc if s["points"]], [], (0.0, 100.0)))
    names = ", ".join(r["name"] for r in runs)
    legend = "".join(f"<div><span class=sw style='background:{color[id(r)]}'></span>{html.escape(r['name'])}"
                     f" <span class=n>({html.escape(label(r))}, {len(r['metrics'])} logged steps)</span></div>"
                     for r in runs)
    widths = sorted({smoothing(r) for r in runs})
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>SD-Zero report: {html.escape(names)}"
            f"</title><style>{CSS}</style></head><body><h1>SD-Zero report</h1>{legend}"
            "<p class=n>x axis: generations used (one generated response = one generation, paper App. "
            f"C.2). Training curves: on-policy steps only, trailing mean over {'/'.join(map(str, widths))} "
            "step(s). Dashed lines: teacher syncs. Hover a line or a point for its name and value.</p>"
            f"{differences(runs)}<div class=charts>{''.join(charts)}</div><h2>Held-out table</h2>{summary_rows(runs)}"
            "<p class=n>correction (own answers): each model revises its own first answers; pool: every "
            "model revises the same fixed answers (revision_pool.jsonl).</p></body></html>")


def write_report(run_dirs: list[str], out: str | None = None) -> str:
    """Render the runs and write the page: into the run folder for one run, else their parent."""
    if out is None:
        out = os.path.join(run_dirs[0] if len(run_dirs) == 1 else
                           os.path.commonpath([os.path.abspath(d) for d in run_dirs]), "report.html")
    with open(out, "w", encoding="utf-8") as f:
        f.write(render([load_run(d) for d in run_dirs]))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Self-contained HTML charts of one or several finished runs.")
    p.add_argument("runs", nargs="+", help="run folders (runs/<name>); several are overlaid")
    p.add_argument("--out", default=None, help="default: <run>/report.html, or <common parent>/report.html")
    args = p.parse_args(argv)
    for d in args.runs:
        if not os.path.isdir(d):
            raise SystemExit(f"error: not a run folder: {d}")
    print(f"wrote {write_report(args.runs, args.out)}")
    return 0


# --------------------------------------------------------------------------------------------
# The self-localisation heat map (evaluate.py --selfloc)
# --------------------------------------------------------------------------------------------
def selfloc_html(path, tok, items, rolls, rewards, scores, phrases, title="SD-Zero") -> None:
    """One self-contained HTML file (inline CSS, no scripts, no external assets): each response's
    tokens coloured by KL (red) with the signed token KL reward in the tooltip; wrong answers first.
    Model text is untrusted, so every piece of it goes through html.escape."""
    order = sorted(range(len(rolls)), key=lambda i: (rewards[i] >= 0.5, i))
    vmax = max([max(s["kl"]) for s in scores if s["kl"]] + [1e-9])
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
             ".r{border:1px solid #ccc;border-radius:6px;padding:.6em;margin:1em 0}"
             ".t{font-family:monospace;white-space:pre-wrap;line-height:1.7}"
             ".w{color:#b00}.c{color:#070}.m{color:#555;font-size:.9em}</style>",
             f"<h1>{html.escape(title)}: where the reviser disagrees with the generator</h1>",
             "<p class=m>Colour = per-token KL(generator ‖ reviser) under the Phase-2 teacher layout "
             "X + Y' + S(P_r) + Y (darker = larger). Hover a token for KL and the token KL reward "
             "log p_gen(y_t) − log p_rev(y_t). Wrong answers first.</p>"]
    for i in order:
        r, it, sc = rolls[i], items[rolls[i].index], scores[i]
        ok = rewards[i] >= 0.5
        gold = it.get("answer", "(tests)")
        spans = []
        for tid, kl, rw in zip(r.completion_ids, sc["kl"], sc["reward_tok"]):
            a = min(1.0, max(kl, 0.0) / vmax) ** 0.5
            txt = html.escape(tok.decode([tid]))
            spans.append(f"<span style='background:rgba(220,30,30,{a:.2f})' "
                         f"title='KL {kl:.4f} | reward {rw:+.4f}'>{txt}</span>")
        parts.append(
            f"<div class=r><div><b>Q:</b> {html.escape(it['question'])}</div>"
            f"<div class=m>gold: {html.escape(str(gold))} · verdict: "
            f"<span class={'c' if ok else 'w'}>{'right' if ok else 'wrong'}</span> · P_r: "
            f"{html.escape(phrases.pick(rewards[i]))} · KL sum {sum(sc['kl']):.3f}</div>"
            f"<div class=t>{''.join(spans)}</div></div>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))


if __name__ == "__main__":
    sys.exit(main())
