"""analysis/report.py: report.html is well-formed, self-contained, escapes every token, carries the
sentences/layers/heads it was given, places word links on the right subword cells, and renders in a real
browser (headless chromium) without script errors, with the heatmaps drawn."""
import json

import numpy as np
import pytest

from fairseq_rela.analysis.report import JS, LEVELS, link_overlay, render_report, sentence_data
from fairseq_rela.recording import AttentionRecord, SentenceAttention
from tests.helpers import ParsedPage, heatmap_colours, render_in_chromium

pytestmark = pytest.mark.unit

# tokens that would be markup, entities, attribute breakers or script terminators if not escaped
SRC = ["<s>", "a&b", '"q"', "x@@", "y", "</script><b>", "</s>"]
TGT_OUT = ["T1", "</s>x", "&amp;", "'z'", "</s>"]
HEADS = 3


def _sentence(sid=7, norms=True, seed=0, block=False) -> SentenceAttention:
    rng = np.random.default_rng(seed)
    sent = SentenceAttention(sid, list(SRC), ["</s>"] + TGT_OUT[:-1], list(TGT_OUT))
    for kind in ("cross", "encoder_self", "decoder_self"):
        queries, keys = sent.tokens(kind)
        for layer in range(2):
            w = np.maximum(rng.normal(size=(HEADS, len(queries), len(keys))), 0)  # ReLA-like: exact zeros
            record = AttentionRecord(kind, layer, w)
            if norms:
                record.weighted_norm = 3 * w
                record.summed_norm = 2 * w.sum(0)
            if block and kind == "cross":
                record.block_norm = rng.uniform(size=(len(queries), len(keys)))
            sent.records[(kind, layer)] = record
    return sent


STATS = {"sentences": 41, "attention_activation": "rela", "checkpoint": "/ck/<b>&.pt", "subset": "test",
         "attention": {kind: {str(l): {"sparsity": [0.1, 0.5, 0.9], "sparsity_mean": 0.5, "null_rate": [0.0, 0.2, 1.0],
                                       "null_rate_mean": 0.4, "head_jsd": 0.3} for l in range(2)}
                       for kind in ("cross", "encoder_self", "decoder_self")}}
ALIGNMENT = {"gold": "/g/<gold>.talp", "sentences": 41,
             "subword_merge": {"source": "subword_nmt", "target": "none", "rule": "sum_mean"},
             "per_layer": {"weights-AWO": {"0": 0.5, "1": 0.4}, "weights-AWI": {"0": 0.45, "1": 0.35},
                           "norms-AWO": {"0": 0.3, "1": 0.25}, "norms-AWI": {"0": 0.3, "1": 0.2}},
             "per_head": {f"{s}-L{l}-H{h}": 0.1 * (h + 1) for s in ("weights-AWO", "norms-AWI")
                          for l in range(2) for h in range(HEADS)},
             "best_layer": {"config": "norms-AWI-1", "aer": 0.2, "precision": 0.8, "recall": 0.8},
             "best_head": {"config": "weights-AWO-0-0", "aer": 0.1, "precision": 0.9, "recall": 0.9},
             "baselines": {"eflomal<x>": {"aer": 0.15, "precision": 0.9, "recall": 0.8}}}


def _report(sentences=None, alignment=ALIGNMENT, stats=STATS):
    if sentences is None:
        sentences = []
        for sid in (7, 2):
            data = sentence_data(_sentence(sid, seed=sid), ["cross", "encoder_self"])
            link_overlay(data, {(0, 0), (1, 2)}, {(0, 0), (1, 2), (2, 1)}, {(0, 0), (2, 2)}, "norms-AWI-1", "AWI",
                         "subword_nmt", "none")
            sentences.append(data)
    return render_report(stats, sentences, alignment, title="rela: <ckpt>&")


def _data(page: ParsedPage) -> dict:
    (blob,) = [text for attrs, text in page.scripts if attrs.get("id") == "report-data"]
    assert "<" not in blob and ">" not in blob and "&" not in blob  # cannot close the script element
    return json.loads(blob)


def test_page_is_well_formed_self_contained_and_escapes_every_token():
    html = _report()
    page = ParsedPage(html)
    assert page.problems == []
    assert page.external_references() == []
    assert "http://" not in html and "https://" not in html and "url(" not in html and "@import" not in html
    assert [a.get("src") for t, a in page.tags if t == "script"] == [None, None]  # both inline
    # no token became markup: the only tags are the renderer's own
    assert {t for t, _ in page.tags} <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "h4",
                                         "table", "tr", "th", "td", "caption", "nav", "a", "noscript", "p", "div",
                                         "section", "span", "br", "code", "button", "details", "summary", "label",
                                         "input", "script", "sub", "sup"}
    text = "".join(page.text)
    assert " ".join(SRC) in text and " ".join(TGT_OUT) in text  # shown as text, exactly
    assert "rela: <ckpt>&" in text and "/ck/<b>&.pt" in text and "eflomal<x>" in text and "/g/<gold>.talp" in text
    data = _data(page)
    assert data["sentences"][0]["src"] == SRC and data["sentences"][0]["tgt_out"] == TGT_OUT


def test_page_has_every_sentence_kind_layer_and_head():
    page = ParsedPage(_report())
    assert [a["id"] for a in page.find("section", **{"class": "sentence"})] == ["sentence-7", "sentence-2"]
    for sid in (7, 2):
        for kind in ("cross", "encoder_self"):
            layers = page.find("div", **{"class": "layer", "data_sentence": sid, "data_kind": kind})
            assert [a["data-layer"] for a in layers] == ["0", "1"]
            assert all(a["data-heads"] == str(HEADS) for a in layers)
        assert page.find("div", data_sentence=sid, data_kind="decoder_self") == []  # not asked for
    buttons = [a["data-head"] for a in page.find("button")]
    assert buttons == (["all"] + [str(h) for h in range(HEADS)]) * 8
    data = _data(page)
    layer = data["sentences"][0]["kinds"]["cross"]["layers"][1]
    assert layer["layer"] == 1 and layer["heads"] == HEADS and len(layer["weights"]["heads"]) == HEADS
    assert len(layer["norms"]["heads"]) == HEADS
    assert np.array(layer["weights"]["all"]["q"]).shape == (len(TGT_OUT), len(SRC))
    # head overview: per kind, sparsity and null rate, one row per layer, one cell per head
    for kind in ("cross", "encoder_self", "decoder_self"):
        assert len(page.find("div", **{"class": "overview", "data_kind": kind})) == 1
    assert len(page.find("table", data_metric="sparsity")) == len(page.find("table", data_metric="null_rate")) == 3
    # the AER table: one row per layer, the best layer configuration marked
    assert len(page.find("table", id="aer-per-layer")) == 1 and len(page.find("td", **{"class": "best"})) == 1
    assert "20.0" in "".join(page.text) and "AER (%) per head" in "".join(page.text)


def test_quantisation_keeps_exact_zeros_and_the_maximum():
    sent = _sentence()
    record = sent.records[("cross", 0)]
    record.weights[0, 0, :] = [0, 1e-9, 0.5, 1.0, 0, 0, 0]
    data = sentence_data(sent, ["cross"])
    head0 = data["kinds"]["cross"]["layers"][0]["weights"]["heads"][0]
    assert head0["max"] == pytest.approx(record.weights[0].max())
    q = np.array(head0["q"])
    assert ((q == 0) == (record.weights[0] == 0)).all()  # zero exactly where the weight is exactly zero
    assert q.max() == LEVELS and q.min() >= 0
    norms = data["kinds"]["cross"]["layers"][0]["norms"]["all"]
    assert np.allclose(np.array(norms["q"]) / LEVELS * norms["max"], record.summed_norm, atol=norms["max"] / LEVELS)
    assert data["kinds"]["cross"]["layers"][0]["block"] is None  # not recorded
    sent = _sentence(block=True)
    block = sentence_data(sent, ["cross"])["kinds"]["cross"]["layers"][1]["block"]
    assert np.allclose(np.array(block["q"]) / LEVELS * block["max"], sent.records[("cross", 1)].block_norm,
                       atol=block["max"] / LEVELS)


def test_non_finite_values_are_drawn_as_zero_and_counted():
    sent = _sentence()
    sent.records[("cross", 0)].weights[1, 0, :2] = [np.nan, np.inf]
    layer = sentence_data(sent, ["cross"])["kinds"]["cross"]["layers"][0]
    assert layer["weights"]["heads"][1]["nonfinite"] == 2 and layer["weights"]["heads"][1]["q"][0][:2] == [0, 0]
    assert "nonfinite" not in layer["weights"]["heads"][0]
    stats = {"attention": {"cross": {"0": {"sparsity": [float("nan"), 0.5], "null_rate": [0.0, 0.1]}}}}
    page = ParsedPage(render_report(stats, [sentence_data(sent, ["cross"])]))
    assert page.problems == [] and "nan" in "".join(page.text)


def test_without_norms_or_alignment_the_page_says_so():
    data = sentence_data(_sentence(norms=False), ["cross"])
    assert data["kinds"]["cross"]["layers"][0]["norms"] is None
    page = ParsedPage(render_report(STATS, [data], None))
    assert page.problems == [] and page.find("section", id="alignment") == []
    assert "links" not in _data(page)["sentences"][0]
    assert ParsedPage(render_report(STATS)).find("section", **{"class": "sentence"}) == []


@pytest.mark.parametrize("shift", ["AWO", "AWI"])
def test_word_links_cover_the_subword_cells_of_both_words(shift):
    data = sentence_data(_sentence(), ["cross"])
    # source words (subword_nmt): <s> | a&b | "q" | x@@ y | </script><b>  -> word 3 is columns 3 and 4
    link_overlay(data, sure={(3, 1)}, possible={(3, 1), (0, 3)}, predicted={(1, 0)}, config="weights-AWO-0",
                 shift=shift, src_style="subword_nmt", tgt_style="none")
    d = 1 if shift == "AWI" else 0
    links = data["links"]
    assert links["sure"] == [[1 + d, 3], [1 + d, 4]]
    assert links["possible"] == [[3 + d, 0]]  # possible-only: the sure link is not repeated
    assert links["predicted"] == [[0 + d, 1]]
    assert links["shift"] == shift and links["config"] == "weights-AWO-0"
    with pytest.raises(ValueError, match="shift"):
        link_overlay(data, set(), set(), set(), "x", "both", "none", "none")


@pytest.mark.e2e
def test_chromium_renders_the_heatmaps_without_script_errors(tmp_path):
    # no head overview or AER table: the only shaded pixels on the page are the heatmaps'
    data = sentence_data(_sentence(block=True), ["cross", "encoder_self"])
    link_overlay(data, {(0, 0)}, {(0, 0), (1, 1)}, {(0, 0)}, "norms-AWI-1", "AWI", "subword_nmt", "none")
    page = tmp_path / "report.html"
    html = render_report({"sentences": 1, "attention": {}}, [data], None, title="<s> & </s>")
    page.write_text(html, encoding="utf-8")
    dom, console, pixels = render_in_chromium(page, tmp_path)
    assert console == [], console
    body = ParsedPage(dom).find("body")[0]
    assert "data-errors" not in body, dom[-2000:]
    assert body["data-rendered"] == str(2 * 2 * 2 + 2)  # 2 kinds x 2 layers x (weights, norms) + cross blocks
    assert heatmap_colours(pixels) > 30
    # the check tells a drawn page from one whose script did not run
    inert = tmp_path / "inert.html"  # the same page without its renderer
    inert.write_text(html.replace(f"<script>{JS}</script>", ""), encoding="utf-8")
    _, _, blank = render_in_chromium(inert, tmp_path)
    assert heatmap_colours(blank) <= 2  # the selected head buttons



def _recorded_sentences(toy_data, n=2):
    import torch

    from fairseq_rela.recording import AttentionRecorder, split_sentences
    from tests.helpers import batch, build

    task, model = build(toy_data, "--attention-activation", "rela")
    sample = batch(task, n)
    rec = AttentionRecorder(model, block=True)
    with torch.no_grad(), rec:
        model(**sample["net_input"])
    return list(split_sentences(sample, rec, task.source_dictionary, task.target_dictionary))


def test_rolled_out_contributions_and_the_source_share_curve(toy_data):
    """With ALTI recorded: the last decoder layer's ALTI+ matrix over [source | target prefix] and one SVG
    source-share curve per source (alti, block); without the block: neither."""
    from fairseq_rela.contributions import sentence_contributions

    sent = _recorded_sentences(toy_data, 1)[0]
    data = sentence_data(sent, ["cross"])
    rolled = data["rollout"]
    expected = sentence_contributions(sent.records, "alti").decoder[-1]
    S = len(sent.src)
    assert rolled["part"] == "decoder" and rolled["layer"] == 1 and rolled["sources"] == S
    assert rolled["queries"] == sent.tgt_out and rolled["keys"][:S] == sent.src and len(rolled["keys"]) == S + len(sent.tgt_in)
    m = rolled["matrix"]
    assert np.allclose(np.array(m["q"]) / LEVELS * m["max"], expected, atol=m["max"] / LEVELS)
    assert list(rolled["source_share"]) == ["alti", "block"]
    assert rolled["source_share"]["alti"] == pytest.approx(expected[:, :S].sum(-1).tolist())
    page = ParsedPage(render_report({"sentences": 1, "attention": {}}, [data]))
    assert page.problems == [] and page.external_references() == []
    assert len(page.find("div", **{"class": "rollout", "data_sentence": sent.id})) == 1
    assert len(page.find("svg", **{"class": "share-curve", "data_sentence": sent.id})) == 1
    (line,) = page.find("polyline", data_source="alti")
    ys = [float(p.split(",")[1]) for p in line["points"].split()]
    assert len(ys) == len(sent.tgt_out) and np.argmax(ys) == np.argmin(rolled["source_share"]["alti"])  # y grows down
    for record in sent.records.values():
        record.alti = record.alti_residual = None
    sent._rolled.clear()
    assert "rollout" not in sentence_data(sent, ["cross"])


@pytest.mark.e2e
def test_chromium_draws_the_rolled_out_contributions(toy_data, tmp_path):
    data = [sentence_data(s, []) for s in _recorded_sentences(toy_data, 2)]
    page = tmp_path / "report.html"
    html = render_report({"sentences": 2, "attention": {}}, data)
    page.write_text(html, encoding="utf-8")
    dom, console, pixels = render_in_chromium(page, tmp_path)
    assert console == [], console
    body = ParsedPage(dom).find("body")[0]
    assert "data-errors" not in body, dom[-2000:]
    assert body["data-rendered"] == "2"  # one rolled-out map per sentence, nothing else drawn
    assert heatmap_colours(pixels) > 10
    inert = tmp_path / "inert.html"  # without the renderer: the SVG curves alone are not blue squares
    inert.write_text(html.replace(f"<script>{JS}</script>", ""), encoding="utf-8")
    assert heatmap_colours(render_in_chromium(inert, tmp_path)[2]) <= 2
