"""analysis/plots.py: each figure draws the numbers it was given, where its titles and labels say, read
back from the returned matplotlib Figure (image arrays, line data, titles, tick labels)."""
import numpy as np
import pytest

from fairseq_rela.analysis.plots import plot_head_heatmaps, plot_sweep, plot_weight_vs_norm, pyplot
from fairseq_rela.recording import AttentionRecord, SentenceAttention

pytestmark = pytest.mark.unit


def _images(fig):
    """The axes that hold a heatmap, in drawing order, and their image arrays."""
    return [(ax, np.asarray(ax.images[0].get_array())) for ax in fig.axes if ax.images]


def test_head_heatmaps_show_each_kind_metric_and_layer():
    rng = np.random.default_rng(0)
    grids = {kind: {metric: rng.uniform(size=(11, 4)) for metric in ("sparsity", "null_rate")}
             for kind in ("encoder_self", "cross")}
    stats = {"attention": {kind: {str(layer): {m: grids[kind][m][layer].tolist() for m in grids[kind]}
                                  for layer in (2, 10, 0, 1, 9, 3, 4, 5, 6, 7, 8)}  # drawn 0, 1, .., 10 top down
                           for kind in grids}}
    fig = plot_head_heatmaps(stats, title="rela: model.pt")
    try:
        shown = _images(fig)
        assert len(shown) == 4 and len(fig.axes) == 8  # kinds x metrics, each with its colour bar
        expected = [(kind, metric) for kind in ("encoder_self", "cross") for metric in ("sparsity", "null_rate")]
        for (ax, array), (kind, metric) in zip(shown, expected):
            assert ax.get_title() == f"{kind}: {metric.replace('_', ' ')}"
            assert ax.get_xlabel() == "head" and ax.get_ylabel() == "layer"
            np.testing.assert_array_equal(array, grids[kind][metric])
            texts = [t.get_text() for t in ax.texts]
            assert texts == [f"{v:.2f}" for v in grids[kind][metric].ravel()]  # every cell's value, row by row
        assert fig._suptitle.get_text() == "rela: model.pt"
    finally:
        pyplot().close(fig)


def _sentence():
    rng = np.random.default_rng(1)
    sent = SentenceAttention(3, ["a", "b", "c", "</s>"], ["</s>", "A", "B"], ["A", "B", "</s>"])
    for layer in (1, 0, 2):
        weights = np.maximum(rng.normal(size=(2, 3, 4)), 0)
        record = AttentionRecord("cross", layer, weights)
        if layer != 2:  # layer 2 recorded without norms
            record.summed_norm = rng.uniform(size=(3, 4))
        sent.records[("cross", layer)] = record
    sent.records[("encoder_self", 0)] = AttentionRecord("encoder_self", 0, rng.uniform(size=(2, 4, 4)))
    return sent


def test_weight_vs_norm_draws_each_layers_weights_beside_its_norms():
    sent = _sentence()
    fig = plot_weight_vs_norm(sent, "cross")
    try:
        axes = fig.axes
        assert len(axes) == 6  # layers 0, 1, 2 x (weights, norms)
        for row, layer in enumerate((0, 1, 2)):
            record = sent.records[("cross", layer)]
            weights_ax, norms_ax = axes[2 * row], axes[2 * row + 1]
            np.testing.assert_array_equal(weights_ax.images[0].get_array(), record.weights.mean(0))
            assert weights_ax.get_title() == f"layer {layer}: weight α (head mean)"
            assert [t.get_text() for t in weights_ax.get_xticklabels()] == sent.src
            assert [t.get_text() for t in weights_ax.get_yticklabels()] == sent.tgt_in
            if layer == 2:  # no norms: the right panel is left blank
                assert not norms_ax.images and not norms_ax.axison
            else:
                np.testing.assert_array_equal(norms_ax.images[0].get_array(), record.summed_norm)
                assert norms_ax.get_title() == f"layer {layer}: norm ‖Σh α f(x)‖"
        assert fig._suptitle.get_text() == "sentence 3, cross attention"
    finally:
        pyplot().close(fig)
    fig = plot_weight_vs_norm(sent, "cross", layers=[1])
    try:
        assert len(fig.axes) == 2 and fig.axes[0].get_title().startswith("layer 1:")
        np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), sent.records[("cross", 1)].summed_norm)
    finally:
        pyplot().close(fig)


def test_sweep_plot_draws_aer_by_layer_and_the_baselines():
    out = {"per_layer": {"weights-AWO": {"0": 0.5, "1": 0.25, "10": 0.125, "2": 0.75},
                         "norms-AWI": {"0": 0.4, "1": 0.3, "10": 0.2, "2": 0.1},
                         "block-AWI": {"0": 0.6, "1": 0.5, "10": 0.45, "2": 0.35}},
           "baselines": {"eflomal-gdfa": {"aer": 0.22}, "diagonal": {"aer": 0.8}}}
    fig = plot_sweep(out)
    try:
        (ax,) = fig.axes  # no rolled-out source: one panel
        curves = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
        assert set(curves) == set(out["per_layer"])
        styles = {"weights-AWO": "-", "norms-AWI": "--", "block-AWI": "--"}  # the shift's style
        for name, per_layer in out["per_layer"].items():
            x, y = curves[name].get_data()
            np.testing.assert_array_equal(x, [0, 1, 2, 10])  # layers in numeric order
            np.testing.assert_allclose(y, [100 * per_layer[l] for l in ("0", "1", "2", "10")])
            assert curves[name].get_linestyle() == styles[name]
        assert len({curves[n].get_color() for n in curves}) == 3  # one colour per source
        levels = sorted(line.get_ydata()[0] for line in ax.get_lines() if line.get_label().startswith("_"))
        assert levels == pytest.approx([22, 80])  # one horizontal line per baseline, at its AER
        assert {t.get_text() for t in ax.texts} == set(out["baselines"])
        assert [t.get_text() for t in ax.get_legend().get_texts()] == list(out["per_layer"])
        assert ax.get_ylabel() == "AER (%)" and ax.get_xlabel() == "decoder layer"
    finally:
        pyplot().close(fig)


def test_sweep_plot_splits_the_rolled_out_sources_and_tells_every_curve_apart():
    """The sweep's 16 curves (4 sources, rolled out or not, x 2 shifts): two panels of 8, every curve of a
    panel a distinct (colour, style) pair, a source the same colour in both panels."""
    per = {f"{roll}{src}-{shift}": {"0": 0.1 * i, "1": 0.05 * i}
           for i, (roll, src, shift) in enumerate((r, s, sh) for r in ("", "rollout-")
                                                  for s in ("weights", "norms", "block", "alti")
                                                  for sh in ("AWO", "AWI"))}
    fig = plot_sweep({"per_layer": per, "baselines": {}})
    try:
        left, right = fig.axes
        drawn = [{line.get_label(): line for line in ax.get_lines()} for ax in (left, right)]
        assert set(drawn[0]) == {n for n in per if not n.startswith("rollout-")}
        assert set(drawn[1]) == {n for n in per if n.startswith("rollout-")}
        for lines in drawn:
            assert len({(line.get_color(), line.get_linestyle()) for line in lines.values()}) == 8
        assert drawn[0]["alti-AWI"].get_color() == drawn[1]["rollout-alti-AWI"].get_color()
        np.testing.assert_allclose(drawn[1]["rollout-norms-AWI"].get_ydata(),
                                   [100 * v for v in per["rollout-norms-AWI"].values()])
        assert "rolled out" in right.get_title() and left.get_ylabel() == "AER (%)"
    finally:
        pyplot().close(fig)
