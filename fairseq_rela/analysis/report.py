"""``report.html``: one self-contained page of an analysis run (``fairseq-rela-analyze --html``).

Pure: :func:`sentence_data` turns a :class:`~fairseq_rela.recording.SentenceAttention` into plain
data, :func:`link_overlay` adds gold and predicted word links to it, and :func:`render_report`
returns the HTML string; the command line writes it.  The page needs no network: CSS, the data (one
JSON blob) and a small vanilla-JS canvas renderer are inline.  Every piece of text from the data
(tokens, paths, names) is escaped in the HTML and written with ``textContent`` by the script.

Page content:

* per drawn sentence, attention kind and layer: the weights (``α``, mean over heads, or one head)
  beside the norms (``‖Σ_h α f(x)‖``, or ``‖α^h f_h(x)‖`` of one head) and, over all heads, the block
  contributions (attention + residual + LayerNorm, ``‖F_i(c_ij)‖``, :mod:`fairseq_rela.block`) and, when
  recorded, value zeroing (:mod:`fairseq_rela.value_zeroing`), tokens on the axes, a head selector per layer;
* cross-attention with a gold alignment: gold links (sure: solid square, possible: dashed square) and
  the links of the sweep's best layer configuration (dot), overlaid on the *subword* cells: a word link
  marks every cell whose source subword and target subword belong to the two linked words (word ids
  from :func:`fairseq_rela.alignment.links.word_ids`).  Target word ``y_t`` is marked on the row the
  best configuration reads: the row that predicts it (AWO) or the row whose input it is (AWI);
* per drawn sentence, when its records hold ALTI (the block was recorded): the token contributions
  rolled out through the whole model (:mod:`fairseq_rela.contributions`): ALTI+'s matrix after the last
  decoder layer, each predicted token's contributions from the source tokens and the target prefix (a
  masked LM: the encoder's rollout after its last layer), and the source-share curve, ALTI+'s source
  share of each predicted token by decoding step, from ``alti``, ``block`` and, when recorded,
  ``value-zeroing`` (an inline SVG);
* a head overview: sparsity and null rate per layer x head of each attention kind (``stats.json``);
* the AER table of the sweep (per layer, weights/norms x AWO/AWI, best layer and head, baselines).

Matrices are stored quantised: integers 0..1000 of the matrix maximum (``max``), where 0 is an exact
zero and any non-zero value is at least 1, so ReLA's exact zeros stay visible.
"""
import html
import json
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from fairseq_rela.alignment.links import word_ids

LEVELS = 1000
CURVE_SOURCES = {"alti": "#08306b", "block": "#e66101", "value-zeroing": "#1b7837"}  # the source-share curves and their colours
KIND_TITLES = {"encoder_self": "encoder self-attention", "decoder_self": "decoder self-attention",
               "cross": "cross-attention (encoder-decoder)"}


def _quantise(matrix) -> dict:
    m = np.asarray(matrix, dtype=np.float64)
    bad = ~np.isfinite(m)
    if bad.any():  # an overflowed run: draw those cells as zeros rather than fail the whole page
        m = np.where(bad, 0.0, m)
    top = float(m.max()) if m.size else 0.0
    if top <= 0:
        q = np.zeros(m.shape, dtype=np.int64)
    else:
        q = np.rint(m / top * LEVELS).astype(np.int64)
        q[(q == 0) & (m > 0)] = 1
        q[m <= 0] = 0
    out = {"max": top, "q": q.tolist()}
    if bad.any():
        out["nonfinite"] = int(bad.sum())
    return out


def sentence_data(sent, kinds: Sequence[str]) -> dict:
    """Tokens and quantised weight/norm matrices (all heads and each head) of ``kinds``, per layer."""
    out = {"id": int(sent.id), "src": list(sent.src), "tgt_in": list(sent.tgt_in), "tgt_out": list(sent.tgt_out),
           "kinds": {}}
    for kind in kinds:
        layers = sorted(layer for k, layer in sent.records if k == kind)
        if not layers:
            continue
        queries, keys = sent.tokens(kind)
        entries = []
        for layer in layers:
            record = sent.records[(kind, layer)]
            heads = int(record.weights.shape[0])
            entry = {"layer": int(layer), "heads": heads,
                     "weights": {"all": _quantise(record.matrix("weights")),
                                 "heads": [_quantise(record.matrix("weights", [h])) for h in range(heads)]},
                     "norms": None, "block": _quantise(record.matrix("block")) if record.has_block else None,
                     "value_zeroing": (None if record.value_zeroing is None
                                       else _quantise(record.matrix("value-zeroing")))}
            if record.has_norms and record.summed_heads is None:
                per_head = ([_quantise(record.matrix("norms", [h])) for h in range(heads)]
                            if record.weighted_norm is not None else None)
                entry["norms"] = {"all": _quantise(record.matrix("norms")), "heads": per_head}
            entries.append(entry)
        out["kinds"][kind] = {"queries": list(queries), "keys": list(keys), "layers": entries}
    rolled = rollout_data(sent)
    if rolled is not None:
        out["rollout"] = rolled
    return out


def _finite_list(values) -> List[Optional[float]]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, np.float64)]


def rollout_data(sent) -> Optional[dict]:
    """The sentence's contributions rolled out by ALTI (None where its records hold no ALTI): the last
    layer's matrix (decoder: ALTI+ over ``[source | target prefix]``, rows the predicted tokens; encoder-only:
    the encoder's rollout) quantised, and per source of :data:`CURVE_SOURCES` the source share by step."""
    sources = sent.rollout_sources()
    if "alti" not in sources:
        return None
    rolled = sent.contributions("alti")
    if rolled.decoder is None:
        return {"part": "encoder", "layer": len(rolled.encoder) - 1, "queries": list(sent.src),
                "keys": list(sent.src), "matrix": _quantise(rolled.encoder[-1]), "source_share": {}}
    keys = list(sent.src) + [f"\u2039{t}\u203a" for t in sent.tgt_in]  # ‹target prefix›
    share = {s: _finite_list(sent.contributions(s).source_share) for s in CURVE_SOURCES if s in sources}
    return {"part": "decoder", "layer": len(rolled.decoder) - 1, "queries": list(sent.tgt_out), "keys": keys,
            "sources": len(sent.src), "matrix": _quantise(rolled.decoder[-1]), "source_share": share}


def _share_curve(sid: int, rolled: dict) -> str:
    """An inline SVG: source share (0..1) of each predicted token (x: decoding step), one line per source."""
    steps = rolled["queries"]
    width, height, left, bottom, top = max(240, 28 * len(steps) + 60), 200, 40, 60, 10
    x = lambda t: left + 28 * t + 14  # noqa: E731
    y = lambda v: top + (1 - v) * (height - top - bottom)  # noqa: E731
    parts = [f'<svg class="share-curve" data-sentence="{sid}" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img">']
    for v in (0, 0.5, 1):
        parts.append(f'<line x1="{left}" x2="{width - 4}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"></line>'
                     f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="10">{v:g}</text>')
    for t, token in enumerate(steps):
        parts.append(f'<text x="{x(t):.1f}" y="{height - bottom + 12}" font-size="10" text-anchor="end" '
                     f'transform="rotate(-60 {x(t):.1f} {height - bottom + 12})">{_e(token)}</text>')
    for source, values in rolled["source_share"].items():
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in enumerate(values) if v is not None)
        colour = CURVE_SOURCES[source]
        parts.append(f'<polyline data-source="{_e(source)}" points="{points}" fill="none" stroke="{colour}" '
                     f'stroke-width="2"></polyline>'
                     + "".join(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"><title>'
                               f'{_e(steps[t])}: {v:.3f} ({_e(source)})</title></circle>'
                               for t, v in enumerate(values) if v is not None))
    parts.append("</svg>")
    return "".join(parts)


def _rollout_block(sid: int, rolled: dict) -> str:
    if rolled["part"] == "encoder":
        caption = (f"the encoder's token contributions rolled out by ALTI after layer {rolled['layer']} (the last): "
                   "row i: how much of token i's representation comes from each token (rows sum to 1)")
        curve = ""
    else:
        caption = (f"ALTI+ after decoder layer {rolled['layer']} (the last): row t, the token predicted at step t; "
                   "columns: the source tokens, then the target prefix the decoder read (‹…›); rows sum to 1")
        legend = " ".join(f'<span style="color:{CURVE_SOURCES[s]}">&#9632; {_e(s)}</span>'
                          for s in rolled["source_share"])
        curve = (f'<p class="legend">source share of each predicted token (ALTI+ rollout: the sum of its source '
                 f'columns; the rest comes from the target prefix), by decoding step: {legend}</p>'
                 + _share_curve(sid, rolled))
    return (f'<div class="rollout" data-sentence="{sid}"><h3>token contributions through the model</h3>'
            f'<p class="legend">{_e(caption)}</p><div class="maps"></div>{curve}</div>')


def _cells(links: Iterable[Tuple[int, int]], src_ids: List[int], tgt_rows: Dict[int, List[int]]) -> List[List[int]]:
    cells = set()
    for s, t in links:
        cols = [c for c, w in enumerate(src_ids) if w == s]
        for row in tgt_rows.get(t, []):
            cells.update((row, c) for c in cols)
    return [list(c) for c in sorted(cells)]


def link_overlay(data: dict, sure: Iterable[Tuple[int, int]], possible: Iterable[Tuple[int, int]],
                 predicted: Iterable[Tuple[int, int]], config: str, shift: str, src_style: str,
                 tgt_style: str) -> dict:
    """Add to a :func:`sentence_data` dict the cells of the cross-attention matrices covered by gold
    (sure; possible-only) and predicted word links ``(source_word, target_word)``, 0-based.

    Source subword ``c`` (``</s>`` excluded) belongs to word ``word_ids(src)[c]``; target token ``t``
    (``tgt_out`` without ``</s>``) sits on row ``t`` (AWO) or ``t + 1`` (AWI) of the matrices."""
    if shift not in ("AWO", "AWI"):
        raise ValueError(f"shift {shift!r}: expected AWO or AWI")
    src = data["src"][:-1] if data["src"] and data["src"][-1] == "</s>" else data["src"]
    tgt = data["tgt_out"][:-1]
    src_ids, tgt_ids = word_ids(src, src_style), word_ids(tgt, tgt_style)
    rows: Dict[int, List[int]] = {}
    for t, w in enumerate(tgt_ids):
        rows.setdefault(w, []).append(t + (shift == "AWI"))
    sure = set(map(tuple, sure))
    data["links"] = {
        "config": config, "shift": shift, "merge": [src_style, tgt_style],
        "sure": _cells(sure, src_ids, rows),
        "possible": _cells(set(map(tuple, possible)) - sure, src_ids, rows),
        "predicted": _cells(predicted, src_ids, rows),
        "words": {"sure": len(sure), "predicted": len(set(map(tuple, predicted)))},
    }
    return data


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _shade(value: Optional[float]) -> str:
    """Background for a value in [0, 1]: white to dark blue, with readable text."""
    if value is None or not np.isfinite(value):
        return ""
    v = min(max(float(value), 0.0), 1.0)
    r, g, b = (int(round(255 + (c - 255) * v)) for c in (8, 48, 107))
    return f' style="background:rgb({r},{g},{b});color:{"#fff" if v > 0.55 else "#000"}"'


def _head_overview(stats: dict) -> str:
    parts = []
    for kind, layers in stats.get("attention", {}).items():
        order = sorted(layers, key=int)
        heads = max((len(layers[l].get("sparsity", [])) for l in order), default=0)
        parts.append(f'<div class="overview" data-kind="{_e(kind)}"><h3>{_e(KIND_TITLES.get(kind, kind))}</h3>')
        for metric in ("sparsity", "null_rate"):
            head_cells = "".join(f"<th>head {h}</th>" for h in range(heads))
            rows = []
            for l in order:
                values = layers[l].get(metric, [])
                cells = "".join(f"<td{_shade(v)}>{'–' if v is None else f'{v:.2f}'}</td>" for v in values)
                mean = layers[l].get(f"{metric}_mean")
                jsd = layers[l].get("head_jsd")
                rows.append(f'<tr data-layer="{_e(l)}"><th>layer {_e(l)}</th>{cells}'
                            f'<td class="mean">{"" if mean is None else f"{mean:.3f}"}</td>'
                            + (f'<td class="mean">{"" if jsd is None else f"{jsd:.3f}"}</td>'
                               if metric == "sparsity" else "") + "</tr>")
            extra = "<th>head JSD</th>" if metric == "sparsity" else ""
            parts.append(f'<table class="grid" data-metric="{metric}"><caption>{metric.replace("_", " ")}</caption>'
                         f"<tr><th></th>{head_cells}<th>mean</th>{extra}</tr>{''.join(rows)}</table>")
        parts.append("</div>")
    return "".join(parts)


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _aer_tables(alignment: dict) -> str:
    cols = list(alignment["per_layer"])
    layers = sorted({l for c in cols for l in alignment["per_layer"][c]}, key=int)
    best = alignment["best_layer"]
    merge = alignment.get("subword_merge", {})
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    rows = []
    for l in layers:
        cells = []
        for c in cols:
            value = alignment["per_layer"][c].get(l)
            mark = ' class="best"' if best["config"] == f"{c}-{l}" else ""
            cells.append(f"<td{mark}>{_pct(value)}</td>")
        rows.append(f'<tr data-layer="{_e(l)}"><th>layer {_e(l)}</th>{"".join(cells)}</tr>')
    out = [f'<p>AER (%) on {_e(alignment["sentences"])} sentences, teacher-forced; subwords merged into words '
           f'({_e(merge.get("source"))}/{_e(merge.get("target"))}, rule {_e(merge.get("rule"))}); '
           f'gold: <code>{_e(alignment.get("gold", ""))}</code></p>',
           f'<table class="aer" id="aer-per-layer"><tr><th>layer</th>{head}</tr>{"".join(rows)}</table>']
    summary = []
    for name, r in (("best layer", best), ("best head", alignment["best_head"])):
        summary.append(f'<tr><th>{name}</th><td><code>{_e(r["config"])}</code></td><td>{_pct(r.get("aer"))}</td>'
                       f'<td>{_pct(r.get("precision"))}</td><td>{_pct(r.get("recall"))}</td></tr>')
    for name, r in alignment.get("baselines", {}).items():
        summary.append(f'<tr class="baseline"><th>baseline</th><td><code>{_e(name)}</code></td>'
                       f'<td>{_pct(r.get("aer"))}</td><td>{_pct(r.get("precision"))}</td>'
                       f'<td>{_pct(r.get("recall"))}</td></tr>')
    out.append('<table class="aer" id="aer-best"><tr><th></th><th>configuration</th><th>AER</th>'
               f'<th>precision</th><th>recall</th></tr>{"".join(summary)}</table>')
    per_head = alignment.get("per_head", {})
    if per_head:
        blocks = []
        for c in cols:
            grid: Dict[str, Dict[int, float]] = {}
            for name, aer in per_head.items():
                prefix, _, rest = name.rpartition("-L")
                if prefix != c or "-H" not in rest:
                    continue
                layer, head_id = rest.split("-H")
                grid.setdefault(layer, {})[int(head_id)] = aer
            if not grid:
                continue
            n_heads = max(max(h) for h in grid.values()) + 1
            hrow = "".join(f"<th>head {h}</th>" for h in range(n_heads))
            body = "".join(f'<tr><th>layer {_e(l)}</th>'
                           + "".join(f"<td>{_pct(grid[l].get(h))}</td>" for h in range(n_heads)) + "</tr>"
                           for l in sorted(grid, key=int))
            blocks.append(f'<table class="aer"><caption>{_e(c)}</caption><tr><th></th>{hrow}</tr>{body}</table>')
        out.append(f'<details><summary>AER (%) per head</summary>{"".join(blocks)}</details>')
    return "".join(out)


def _sentence_skeleton(data: dict) -> str:
    sid = data["id"]
    text = (f'<p class="pair"><span class="label">source</span> {_e(" ".join(data["src"]))}<br>'
            f'<span class="label">target</span> {_e(" ".join(data["tgt_out"]))}</p>')
    links = data.get("links")
    if links:
        text += (f'<p class="legend">cross-attention links, overlaid on subword cells: '
                 f'<span class="key sure"></span> gold sure <span class="key possible"></span> gold possible '
                 f'<span class="key predicted"></span> predicted by <code>{_e(links["config"])}</code> '
                 f'(the sweep\'s best layer configuration; target words on the rows that '
                 f'{"take them as input (AWI)" if links["shift"] == "AWI" else "predict them (AWO)"})</p>')
    blocks = []
    for kind, kd in data["kinds"].items():
        layers = []
        for entry in kd["layers"]:
            layer, heads = entry["layer"], entry["heads"]
            buttons = ['<button type="button" data-head="all" class="on">all heads</button>'] + [
                f'<button type="button" data-head="{h}">head {h}</button>' for h in range(heads)]
            layers.append(f'<div class="layer" data-sentence="{sid}" data-kind="{_e(kind)}" data-layer="{layer}" '
                          f'data-heads="{heads}"><h4>layer {layer}</h4><div class="heads">{"".join(buttons)}</div>'
                          '<div class="maps"></div></div>')
        blocks.append(f'<div class="kind" data-kind="{_e(kind)}"><h3>{_e(KIND_TITLES.get(kind, kind))}</h3>'
                      f'{"".join(layers)}</div>')
    if data.get("rollout"):
        blocks.append(_rollout_block(sid, data["rollout"]))
    return (f'<section class="sentence" id="sentence-{sid}" data-sentence="{sid}"><h2>sentence {sid}</h2>'
            f'{text}{"".join(blocks)}</section>')


def _json_for_script(obj) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` characters."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_report(stats: dict, sentences: Sequence[dict] = (), alignment: Optional[dict] = None,
                  title: str = "") -> str:
    """The whole page: ``stats`` (``stats.json``), the :func:`sentence_data` dicts of the drawn
    sentences, and the sweep's ``alignment.json`` (or None)."""
    meta = []
    for key, name in (("attention_activation", "attention"), ("checkpoint", "checkpoint"), ("subset", "subset"),
                      ("num_updates", "updates"), ("sentences", "sentences"), ("skipped_sentences", "skipped")):
        if stats.get(key) is not None:
            meta.append(f"<tr><th>{name}</th><td>{_e(stats[key])}</td></tr>")
    body = [f'<h1>{_e(title or "fairseq-rela-analyze report")}</h1>',
            f'<table class="meta">{"".join(meta)}</table>',
            '<nav>' + " · ".join(f'<a href="#sentence-{s["id"]}">sentence {s["id"]}</a>' for s in sentences)
            + ' · <a href="#heads">heads</a>' + (' · <a href="#alignment">alignment</a>' if alignment else "")
            + '</nav>',
            '<noscript><p class="error">The attention maps are drawn by the inline script: enable JavaScript.'
            '</p></noscript><div id="errors" class="error" hidden></div>']
    if sentences:
        body.append('<p class="help">Maps: rows are queries, columns keys; each map is shaded from 0 (white) to '
                    'its own maximum (dark); exact zeros are white. Left: weights α (mean over heads, or one '
                    'head); right: norms ‖Σ<sub>h</sub> α f(x)‖ (or ‖α<sup>h</sup> f<sub>h</sub>(x)‖ of one head). '
                    'Hover a cell for its value.'
                    '<label><input type="checkbox" id="show-links" checked> show alignment links</label></p>')
    body.extend(_sentence_skeleton(s) for s in sentences)
    body.append(f'<section id="heads"><h2>heads: sparsity and null rate</h2>{_head_overview(stats)}</section>')
    if alignment:
        body.append(f'<section id="alignment"><h2>alignment error rate</h2>{_aer_tables(alignment)}</section>')
    data = {"sentences": list(sentences)}
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{_e(title or "fairseq-rela-analyze report")}</title><style>{CSS}</style></head>\n<body>\n'
            + "\n".join(body)
            + '\n<div id="tip" hidden></div>'
            + f'\n<script type="application/json" id="report-data">{_json_for_script(data)}</script>'
            + f"\n<script>{JS}</script>\n</body></html>\n")


CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:16px 24px;color:#111;background:#fff}
h1{font-size:20px;margin:0 0 8px}h2{font-size:17px;margin:24px 0 6px;border-bottom:1px solid #ccc}
h3{font-size:15px;margin:14px 0 4px}h4{font-size:13px;margin:6px 0 2px}
table{border-collapse:collapse;margin:4px 12px 10px 0;font-size:12px}
th,td{border:1px solid #ddd;padding:2px 6px;text-align:right}th{background:#f4f4f4;font-weight:600}
table.meta td{text-align:left}caption{font-weight:600;text-align:left;padding:2px 0}
table.grid,table.aer{display:inline-table;vertical-align:top}td.mean{background:#fafafa}
td.best{font-weight:700;outline:2px solid #e66101}
.pair{font-family:ui-monospace,monospace;font-size:12px;background:#f7f7f7;padding:4px 8px}
.label{color:#666;font-family:system-ui,sans-serif}
.layer{display:inline-block;vertical-align:top;margin:0 18px 12px 0}
.heads button{font-size:11px;margin:0 2px 4px 0;padding:1px 6px;border:1px solid #999;background:#fff;cursor:pointer}
.heads button.on{background:#08306b;color:#fff}
.maps{display:flex;gap:10px}figure{margin:0}figcaption{font-size:11px;color:#333}
.key{display:inline-block;width:10px;height:10px;margin:0 2px 0 8px;vertical-align:middle}
.key.sure{border:2px solid #1a9641}.key.possible{border:2px dashed #1a9641}
.key.predicted{background:#e66101;border-radius:50%}
.error{color:#b00;font-weight:600}.help{font-size:12px;color:#444}.help label{margin-left:12px}
#tip{position:fixed;pointer-events:none;background:#222;color:#fff;font-size:11px;padding:2px 5px;border-radius:3px}
"""

JS = r"""
(function () {
  "use strict";
  var errors = [];
  function fail(msg) {
    errors.push(msg);
    var box = document.getElementById("errors");
    box.hidden = false;
    box.textContent = "report error: " + errors.join("; ");
    document.body.setAttribute("data-errors", String(errors.length));
  }
  window.addEventListener("error", function (e) { fail(e.message); });
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var byId = {};
  data.sentences.forEach(function (s) { byId[s.id] = s; });
  var tip = document.getElementById("tip");
  var showLinks = document.getElementById("show-links");
  var drawn = 0;

  function shade(v) {  // 0..1 -> white .. dark blue
    var a = [255, 255, 255], b = [8, 48, 107];
    return "rgb(" + a.map(function (x, i) { return Math.round(x + (b[i] - x) * v); }).join(",") + ")";
  }
  function short(t) { return t.length > 14 ? t.slice(0, 13) + "\u2026" : t; }

  function draw(canvas, m, rows, cols, links) {
    var T = rows.length, S = cols.length;
    var cell = Math.max(6, Math.min(22, Math.floor(440 / Math.max(T, S, 1))));
    var ctx = canvas.getContext("2d");
    ctx.font = "11px sans-serif";
    var left = 6 + Math.max.apply(null, rows.map(function (t) { return ctx.measureText(short(t)).width; }).concat([0]));
    var top = 6 + Math.max.apply(null, cols.map(function (t) { return ctx.measureText(short(t)).width; }).concat([0]));
    var w = Math.ceil(left + S * cell + 2), h = Math.ceil(top + T * cell + 2);
    var dpr = window.devicePixelRatio || 1;
    canvas.width = w * dpr; canvas.height = h * dpr;
    canvas.style.width = w + "px"; canvas.style.height = h + "px";
    ctx = canvas.getContext("2d");
    ctx.scale(dpr, dpr);
    ctx.font = "11px sans-serif";
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, h);
    for (var i = 0; i < T; i++) {
      for (var j = 0; j < S; j++) {
        ctx.fillStyle = shade(m.q[i][j] / 1000);
        ctx.fillRect(left + j * cell, top + i * cell, cell, cell);
      }
    }
    ctx.strokeStyle = "#999"; ctx.lineWidth = 1;
    ctx.strokeRect(left - 0.5, top - 0.5, S * cell + 1, T * cell + 1);
    ctx.fillStyle = "#111"; ctx.textBaseline = "middle"; ctx.textAlign = "right";
    rows.forEach(function (t, i) { ctx.fillText(short(t), left - 3, top + (i + 0.5) * cell); });
    cols.forEach(function (t, j) {
      ctx.save(); ctx.translate(left + (j + 0.5) * cell, top - 3); ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left"; ctx.fillText(short(t), 0, 0); ctx.restore();
    });
    if (links) {
      ctx.lineWidth = 2; ctx.strokeStyle = "#1a9641";
      links.sure.forEach(function (c) { ctx.strokeRect(left + c[1] * cell + 1, top + c[0] * cell + 1, cell - 2, cell - 2); });
      ctx.setLineDash([3, 2]);
      links.possible.forEach(function (c) { ctx.strokeRect(left + c[1] * cell + 1, top + c[0] * cell + 1, cell - 2, cell - 2); });
      ctx.setLineDash([]);
      ctx.fillStyle = "#e66101";
      links.predicted.forEach(function (c) {
        ctx.beginPath();
        ctx.arc(left + (c[1] + 0.5) * cell, top + (c[0] + 0.5) * cell, Math.max(2, cell / 5), 0, 2 * Math.PI);
        ctx.fill();
      });
    }
    canvas.onmousemove = function (e) {
      var r = canvas.getBoundingClientRect();
      var j = Math.floor((e.clientX - r.left - left) / cell), i = Math.floor((e.clientY - r.top - top) / cell);
      if (i < 0 || j < 0 || i >= T || j >= S) { tip.hidden = true; return; }
      tip.hidden = false;
      tip.textContent = rows[i] + " \u2192 " + cols[j] + ": " + (m.q[i][j] / 1000 * m.max).toPrecision(3);
      tip.style.left = (e.clientX + 12) + "px"; tip.style.top = (e.clientY + 12) + "px";
    };
    canvas.onmouseleave = function () { tip.hidden = true; };
    drawn++;
  }

  function figure(parent, caption) {
    var fig = document.createElement("figure");
    var canvas = document.createElement("canvas");
    var cap = document.createElement("figcaption");
    cap.textContent = caption;
    fig.appendChild(canvas); fig.appendChild(cap); parent.appendChild(fig);
    return canvas;
  }

  function render(div, head) {
    var s = byId[div.getAttribute("data-sentence")];
    var kind = div.getAttribute("data-kind");
    var kd = s.kinds[kind];
    var layer = Number(div.getAttribute("data-layer"));
    var entry = kd.layers.filter(function (e) { return e.layer === layer; })[0];
    var maps = div.querySelector(".maps");
    maps.textContent = "";
    var links = kind === "cross" && s.links && showLinks && showLinks.checked ? s.links : null;
    var which = head === "all" ? "all" : Number(head);
    var pick = function (src) { return which === "all" ? src.all : (src.heads ? src.heads[which] : null); };
    var w = pick(entry.weights);
    var note = function (m) { return m.nonfinite ? " (" + m.nonfinite + " non-finite cells shown as 0)" : ""; };
    draw(figure(maps, (which === "all" ? "weights \u03b1 (head mean)" : "weights \u03b1, head " + which)
                + ", max " + w.max.toPrecision(3) + note(w)), w, kd.queries, kd.keys, links);
    var n = entry.norms ? pick(entry.norms) : null;
    if (n) {
      draw(figure(maps, (which === "all" ? "norms \u2016\u03a3h \u03b1 f(x)\u2016" : "norms \u2016\u03b1 f(x)\u2016, head " + which)
                  + ", max " + n.max.toPrecision(3) + note(n)), n, kd.queries, kd.keys, links);
    } else {
      var p = document.createElement("p");
      p.textContent = "norms not recorded";
      maps.appendChild(p);
    }
    if (which === "all" && entry.block) {
      draw(figure(maps, "block \u2016F(\u03b1 f(x) + residual)\u2016 after LayerNorm, max " + entry.block.max.toPrecision(3)
                  + note(entry.block)), entry.block, kd.queries, kd.keys, links);
    }
    if (which === "all" && entry.value_zeroing) {
      draw(figure(maps, "value zeroing: 1 − cos of the layer output, rows normalised, max "
                  + entry.value_zeroing.max.toPrecision(3) + note(entry.value_zeroing)),
           entry.value_zeroing, kd.queries, kd.keys, links);
    }
  }

  var layers = Array.prototype.slice.call(document.querySelectorAll("div.layer"));
  function current(div) { return div.querySelector("button.on").getAttribute("data-head"); }
  layers.forEach(function (div) {
    try { render(div, "all"); } catch (e) { fail(String(e)); }
    div.querySelector(".heads").addEventListener("click", function (e) {
      var b = e.target.closest("button");
      if (!b) return;
      div.querySelectorAll("button").forEach(function (x) { x.classList.toggle("on", x === b); });
      render(div, b.getAttribute("data-head"));
    });
  });
  Array.prototype.slice.call(document.querySelectorAll("div.rollout")).forEach(function (div) {
    try {
      var r = byId[div.getAttribute("data-sentence")].rollout;
      draw(figure(div.querySelector(".maps"), "ALTI rollout, max " + r.matrix.max.toPrecision(3)), r.matrix,
           r.queries, r.keys, null);
    } catch (e) { fail(String(e)); }
  });
  if (showLinks) {
    showLinks.addEventListener("change", function () {
      layers.forEach(function (div) { if (div.getAttribute("data-kind") === "cross") render(div, current(div)); });
    });
  }
  document.body.setAttribute("data-rendered", String(drawn));
})();
"""
