"""The board as one static, self-contained page: inline CSS and vanilla JS, plots as data URIs.

Every table with class ``sortable`` sorts on a header click (or Enter/Space on a focused header):
numeric columns by each cell's ``data-value`` (largest first on the first click), text columns
alphabetically; empty cells stay last either way. The header's ``aria-sort`` says the order.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from act_eval.leaderboard.board import KINDS, Board, Cell, Detail, Section, family_label
from act_eval.leaderboard.figures import heatmap_name
from act_eval.leaderboard.manifest import short_name, shots_label
from act_eval.leaderboard.render import (
    SUBSET_TITLES,
    points,
    signed,
    significance,
    value_text,
)

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 1400px; padding: 0 1rem; color: #1b1f24; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; } h4 { margin: 1.6rem 0 .4rem; }
p.note { color: #57606a; max-width: 70rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; display: block; max-width: 100%; overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: .25rem .55rem; text-align: left; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
thead th { background: #f6f8fa; }
table.sortable thead th { cursor: pointer; user-select: none; }
table.sortable thead th:hover { background: #eaeef2; }
th[aria-sort="ascending"]::after { content: " \\25B2"; } th[aria-sort="descending"]::after { content: " \\25BC"; }
td.sig-pos { background: #dafbe1; } td.sig-neg { background: #ffebe9; }
code { font-size: 12px; } img { max-width: 100%; border: 1px solid #d0d7de; margin: .3rem 0 1rem; }
"""

_JS = """
(function () {
  function key(cell, numeric) {
    var raw = cell ? cell.getAttribute("data-value") : null;
    if (raw === null) raw = cell ? cell.textContent.trim() : "";
    if (raw === "" || raw === "\\u2013") return null;
    return numeric ? parseFloat(raw) : raw.toLowerCase();
  }
  function sortBy(table, th) {
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var numeric = th.getAttribute("data-type") === "num";
    var current = th.getAttribute("aria-sort");
    var order = current ? (current === "ascending" ? "descending" : "ascending") : (numeric ? "descending" : "ascending");
    var sign = order === "ascending" ? 1 : -1;
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[index], numeric), y = key(b.cells[index], numeric);
      if (x === null || y === null) return (x === null) - (y === null);
      return x < y ? -sign : x > y ? sign : 0;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(th.parentNode.children, function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", order);
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortBy(table, th); });
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(table, th); }
      });
    });
    table.setAttribute("data-sortable", "ready");
  });
})();
"""


def page(board: Board, plots: Path) -> str:
    """The whole page; ``plots`` is the directory the board's PNG files were written to."""
    body = [
        "<h1>act-eval leaderboard</h1>",
        '<p class="note">Verified lm-eval runs of the act-eval suites: baseline, ACT (<code>hf-act</code> with a head map), '
        "k-shot ICL, the label-prior rivals (contextual calibration; batch calibration, which is transductive: its "
        "prior is the mean over the test inputs) and first-token attention scaling (<code>hf-act</code> with a "
        "first-token head map), per model. Values are each family's primary metric in points (unweighted mean over its tasks); "
        "&Delta; is the difference from the same model's baseline on the same documents, with its significance from "
        f"<code>act_eval.compare</code> (green/red: p &lt; {board.alpha:g}; hover for the interval and test). "
        "Click a column header to sort.</p>",
    ]
    if not board.sections:
        body.append("<p>No submissions yet.</p>")
    for section in board.sections:
        body += _section(board, section, plots)
    if board.submissions:
        body += _submissions(board)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>act-eval leaderboard</title>\n'
        f"<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + f"\n<script>{_JS}</script>\n</body>\n</html>\n"
    )


def _section(board: Board, section: Section, plots: Path) -> list[str]:
    """The main table, the cross-model view and the per-task comparisons of one subset."""
    out = [f'<h2 id="{section.subset}">{escape(SUBSET_TITLES.get(section.subset, section.subset))}</h2>']
    out.append(_main_table(board, section))
    if section.winners:
        out += _winners(board, section)
    if section.gains:
        out += _cross_model(board, section, plots)
    if section.details:
        out.append("<h3>Per-task comparisons</h3>")
    for n, detail in enumerate(section.details):
        out += _detail(board, detail, f"detail-{section.subset}-{n}", plots)
    return out


def _main_table(board: Board, section: Section) -> str:
    """One row per submission: per family its value and its difference from the model's baseline."""
    head = [_th("Model", "text"), _th("Arm", "text"), _th("Suite", "text")]
    for family in section.families:
        label = f"{family_label(family)} ({section.metrics[family]})"
        head += [_th(label, "num", f"value:{family}"), _th(f"Δ {family_label(family)}", "num", f"diff:{family}")]
    rows = []
    for row in section.rows:
        cells = [_td(short_name(row.model), title=row.model), _td(row.label), _td(row.suite)]
        for family in section.families:
            cells += [_value_td(row.families.get(family)), _diff_td(row.families.get(family), board.alpha)]
        rows.append(f'<tr data-id="{escape(row.id)}">' + "".join(cells) + "</tr>")
    return (
        f'<table class="sortable board" id="board-{section.subset}"><thead><tr>{"".join(head)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _cross_model(board: Board, section: Section, plots: Path) -> list[str]:
    """Which model gains most from ACT, and on which tasks."""
    models = [
        [
            _td(short_name(m.model), title=m.model),
            _num(m.results, str(m.results)),
            _num(m.mean_diff, signed(m.mean_diff)),
            _num(m.gains, str(m.gains)),
            _num(m.losses, str(m.losses)),
            _td(m.best_task),
            _num(m.best_diff, signed(m.best_diff)),
        ]
        for m in section.models
    ]
    gains = [
        [
            _td(short_name(g.model), title=g.model),
            _td(g.head_map),
            _td(family_label(g.family)),
            _td(g.task),
            _num(g.baseline, points(g.baseline)),
            _num(g.act, points(g.act)),
            _diff_td(Cell(g.act, diff=g.diff, low=g.low, high=g.high, p=g.p, verdict=g.verdict), board.alpha),
            _num(g.p, f"{g.p:.3g}"),
            _td(g.verdict),
        ]
        for g in section.gains
    ]
    model_head = ["Model", "ACT results:num", "Mean Δ:num", "Significant gains:num", "Significant losses:num",
                  "Best task", "Best Δ:num"]  # fmt: skip
    gain_head = ["Model", "Head map", "Family", "Task", "Baseline:num", "ACT:num", "Δ:num", "p (Holm):num", "Verdict"]
    return [
        "<h3>Which model gains most from ACT</h3>",
        '<p class="note">Per model, over its ACT results (one per task and head map): the mean difference from its '
        f"baseline and how many are significant (p Holm-adjusted within the family &lt; {board.alpha:g}); then every "
        "task's difference, largest first (hover for its interval).</p>",
        _table(f"models-{section.subset}", model_head, models),
        _table(f"gains-{section.subset}", gain_head, gains),
        _image(plots / heatmap_name(section.subset), "ACT gain per task and model"),
    ]


def _detail(board: Board, d: Detail, table_id: str, plots: Path) -> list[str]:
    """One compare report (every comparison and task) with its forest plot."""
    arms = ", ".join(d.arms)
    head = ["Comparison", "Task", "n:num", "Reference:num", "Other:num", "Δ:num", "Test", "p:num",
            f"p ({d.report.adjust}):num", "Verdict"]  # fmt: skip
    rows = [
        [
            _td(r.comparison),
            _td(r.task),
            _num(r.n, str(r.n)),
            _num(r.a_value, points(r.a_value)),
            _num(r.b_value, points(r.b_value)),
            _diff_td(
                Cell(
                    r.b_value,
                    diff=r.diff,
                    low=r.diff_low,
                    high=r.diff_high,
                    p=r.p_adjusted,
                    test=r.test,
                    verdict=r.verdict,
                ),
                board.alpha,
            ),  # fmt: skip
            _td(r.test),
            _num(r.p_value, f"{r.p_value:.3g}"),
            _num(r.p_adjusted, f"{r.p_adjusted:.3g}"),
            _td(r.verdict),
        ]
        for r in d.report.rows
    ]
    return [
        f"<h4>{escape(short_name(d.model))} · {escape(family_label(d.family))}: "
        f"<code>{escape(arms)}</code> against <code>{escape(d.baseline)}</code></h4>",
        _table(table_id, head, rows),
        _image(plots / d.plot, f"forest plot: {arms}"),
    ]


def _winners(board: Board, section: Section) -> list[str]:
    """Per model and family: each kind of arm's value and difference, and the arm that scores highest."""
    kinds = [k for k in KINDS if any(k in w.cells for w in section.winners)]
    head = ["Model", "Family"] + [f"{KINDS[k]}:num" for k in kinds] + ["Best arm"]
    rows = [
        [_td(short_name(w.model), title=w.model), _td(family_label(w.family))]
        + [_value_diff_td(w.cells.get(k), board.alpha) for k in kinds]
        + [_td(KINDS[w.best])]
        for w in section.winners
    ]
    return [
        "<h3>Which arm wins, per model and family</h3>",
        '<p class="note">Each arm\'s family value with its difference from the baseline (green/red: p &lt; '
        f"{board.alpha:g}); batch calibration is transductive (its prior is the mean over the test inputs).</p>",
        _table(f"winners-{section.subset}", head, rows),
    ]


def _value_diff_td(cell: Cell | None, alpha: float) -> str:
    if cell is None:
        return '<td class="num" data-value="">–</td>'
    text = value_text(cell) + (f" ({signed(cell.diff)}{significance(cell, alpha)})" if cell.diff is not None else "")
    return _num(cell.value, text)


def _submissions(board: Board) -> list[str]:
    """Every accepted submission with what its manifest says about it."""
    rows = [
        [
            _td(s.id),
            _td(s.manifest.model.id),
            _td(s.manifest.model.weights, title=s.manifest.model.file_hash),
            _td(s.manifest.arm_label),
            _td(s.manifest.suite),
            _num(s.manifest.fewshot.num_fewshot or 0, shots_label(s.manifest)),
            _td(f"{s.manifest.versions.lm_eval} / {s.manifest.versions.transformers} / {s.manifest.versions.act_eval}"),
            _td(s.manifest.hardware),
            _td(s.manifest.date),
            _td(s.accepted),
        ]
        for s in board.submissions
    ]
    head = ["Id", "Model", "Weights", "Arm", "Suite", "Shots:num", "lm-eval / transformers / act-eval", "Hardware",
            "Run on", "Accepted"]  # fmt: skip
    return ['<h2 id="submissions">Submissions</h2>', _table("submissions", head, rows)]


def _table(table_id: str, head: list[str], rows: list[list[str]]) -> str:
    """A sortable table; a header ``"Label:num"`` sorts numerically, a plain ``"Label"`` as text."""
    header = "".join(_th(*spec.rsplit(":", 1)) if spec.endswith(":num") else _th(spec, "text") for spec in head)
    body = "".join("<tr>" + "".join(cells) + "</tr>" for cells in rows)
    return f'<table class="sortable" id="{table_id}"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'


def _th(label: str, kind: str, key: str | None = None) -> str:
    cls = ' class="num"' if kind == "num" else ""
    data_key = f' data-key="{escape(key)}"' if key else ""
    return f'<th data-type="{kind}"{cls}{data_key}>{escape(label)}</th>'


def _td(text: str, *, title: str | None = None) -> str:
    tip = f' title="{escape(title)}"' if title else ""
    return f"<td{tip}>{escape(text)}</td>"


def _num(value: float | int, text: str) -> str:
    return f'<td class="num" data-value="{value!r}">{escape(text)}</td>'


def _value_td(cell: Cell | None) -> str:
    if cell is None:
        return '<td class="num" data-value="">–</td>'
    return _num(cell.value, value_text(cell))


def _diff_td(cell: Cell | None, alpha: float) -> str:
    """The difference, coloured when significant; the interval, test and verdict in the tooltip."""
    if cell is None or cell.diff is None:
        return '<td class="num" data-value="">–</td>'
    marker = significance(cell, alpha)
    cls = "num" + ((" sig-pos" if cell.diff > 0 else " sig-neg") if marker else "")
    tip = (f"95% CI [{signed(cell.low)}, {signed(cell.high)}], p = {cell.p:.3g}"
           + (f" ({cell.test})" if cell.test else "") + f": {cell.verdict}")  # fmt: skip
    return (
        f'<td class="{cls}" data-value="{cell.diff!r}" title="{escape(tip)}">{escape(signed(cell.diff) + marker)}</td>'
    )


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'
