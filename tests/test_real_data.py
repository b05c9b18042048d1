"""Tests on the real data in ../shared/data (or $FAIRSEQ_RELA_DATA): RWTH gold, Europarl, Multi30k."""
import gzip
import importlib.util
import json

import pytest

from fairseq_rela.alignment.aer import alignment_error_rate, read_gold
from tests.helpers import REPO, SHARED_DATA, USER_DIR, independent_sparsity, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.realdata]


@pytest.fixture(scope="module")
def data():
    missing = [d for d in ("rwth-deen", "europarl", "multi30k") if not (SHARED_DATA / d).is_dir()]
    if missing:
        raise AssertionError(f"real data missing under {SHARED_DATA}: {', '.join(missing)} "
                             "(set FAIRSEQ_RELA_DATA to the shared data folder)")
    return SHARED_DATA


def _prepare_module():
    spec = importlib.util.spec_from_file_location("prepare", REPO / "examples" / "rwth_alignment" / "prepare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _words(path):
    return [line.split() for line in path.read_text(encoding="utf-8").split("\n")[:-1]]


def test_rwth_gold_links_fit_the_sentences(data):
    gold = read_gold(str(data / "rwth-deen/alignment.talp"), base=1)
    de, en = _words(data / "rwth-deen/test.de"), _words(data / "rwth-deen/test.en")
    assert len(gold) == len(de) == len(en) == 508
    for g, s, t in zip(gold, de, en):
        assert g.sure <= g.possible
        assert all(i < len(s) and j < len(t) for i, j in g.possible)
    assert sum(len(g.sure) for g in gold) > 5000


def _nltk_corpus_aer(gold_path, hyp_links):
    """Corpus AER by NLTK's reference implementation, on (sentence, i, j) triples; the gold file is
    parsed here independently (1-based talp: ``i-j`` sure, ``ipj`` possible)."""
    from nltk.translate.metrics import alignment_error_rate as nltk_aer

    sure, possible = set(), set()
    for n, line in enumerate(gold_path.read_text(encoding="utf-8").split("\n")[:508]):
        for link in line.split():
            sep = "p" if "p" in link else "-"
            i, j = (int(x) - 1 for x in link.split(sep))
            possible.add((n, i, j))
            if sep == "-":
                sure.add((n, i, j))
    hyp = {(n, i, j) for n, links in enumerate(hyp_links) for i, j in links}
    return nltk_aer(sure, hyp, possible)


def test_eflomal_baseline_on_europarl_and_rwth(data, tmp_path):
    from fairseq_rela.alignment.eflomal import eflomal_alignments

    prep = _prepare_module()
    de = prep.read_lines(data / "europarl/europarl-v7-head20k.de.gz")[:3000]
    en = prep.read_lines(data / "europarl/europarl-v7-head20k.en.gz")[:3000]
    test_de = prep.read_lines(data / "rwth-deen/test.de")
    test_en = prep.read_lines(data / "rwth-deen/test.en")
    links = eflomal_alignments([prep.tokenize(x) for x in de], [prep.tokenize(x) for x in en], test_de, test_en)
    gold = read_gold(str(data / "rwth-deen/alignment.talp"))
    aer = {name: alignment_error_rate(gold, hyp) for name, hyp in links.items()}
    assert all(len(hyp) == 508 for hyp in links.values())
    # a real aligner on 3.5k sentences: far better than chance, and symmetrisation helps
    assert aer["eflomal-gdfa"].aer < 0.45
    assert aer["eflomal-gdfa"].aer <= min(aer["eflomal-fwd"].aer, aer["eflomal-rev"].aer) + 0.02
    # the scorer CLI on Pharaoh files (0-based, as fast_align/eflomal write them) == NLTK's AER
    for name, hyp in links.items():
        path = tmp_path / f"{name}.links"
        path.write_text("".join(" ".join(f"{i}-{j}" for i, j in sorted(h)) + "\n" for h in hyp))
        out = json.loads(run_cli("fairseq-rela-aer", "--gold", data / "rwth-deen/alignment.talp", "--hyp", path,
                                 "--json").stdout)
        assert out["sentences"] == 508
        assert out["aer"] == pytest.approx(_nltk_corpus_aer(data / "rwth-deen/alignment.talp", hyp), abs=1e-12)
        assert out["aer"] == pytest.approx(aer[name].aer, abs=1e-12)


@pytest.fixture(scope="module")
def multi30k(data, tmp_path_factory):
    d = tmp_path_factory.mktemp("multi30k")
    for split, name, n in (("train", "train", 3000), ("valid", "val", 200), ("test", "test_2016_flickr", 100)):
        for lang in ("de", "en"):
            with gzip.open(data / f"multi30k/{name}.{lang}.gz", "rt", encoding="utf-8") as f:
                lines = [next(f).rstrip("\n").lower() for _ in range(n)]
            (d / f"{split}.{lang}").write_text("\n".join(" ".join(l.replace(".", " .").replace(",", " ,").split())
                                                         for l in lines) + "\n")
    run_cli("fairseq-preprocess", "--source-lang", "de", "--target-lang", "en", "--trainpref", d / "train",
            "--validpref", d / "valid", "--testpref", d / "test", "--destdir", d / "bin", "--workers", "1",
            "--thresholdsrc", "2", "--thresholdtgt", "2")
    return d


@pytest.mark.parametrize("activation", ["rela", "softmax"])
def test_analyze_models_trained_on_multi30k(multi30k, activation, tmp_path):
    from tests.helpers import TRAIN_ARGS

    ckpt_dir = multi30k / f"ckpt-{activation}"
    run_cli("fairseq-train", multi30k / "bin", "--user-dir", USER_DIR, *TRAIN_ARGS, "--attention-activation",
            activation, "--max-epoch", "2", "--save-dir", ckpt_dir)
    out = tmp_path / "analysis"
    run_cli("fairseq-rela-analyze", multi30k / "bin", "--path", ckpt_dir / "checkpoint_last.pt", "--gen-subset",
            "test", "--user-dir", USER_DIR, "--output-dir", out, "--cpu", "--plot-sentences", "3")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["sentences"] == 100
    _check_figures(out, stats, tmp_path)
    expected, _ = independent_sparsity(ckpt_dir / "checkpoint_last.pt", multi30k)
    assert stats["attention"]["cross"]["0"]["sparsity_mean"] == pytest.approx(expected, abs=1e-9)
    punct = stats["attention"]["encoder_self"]["0"]["token_share"]["punct"]
    assert punct["weight"] > 0 and punct["norm"] > 0  # real text has punctuation
    if activation == "softmax":
        assert expected == 0
    else:
        assert expected > 0


def _check_figures(out, stats, tmp_path):
    """heads.png is the head heatmap figure of the stats.json beside it, pixel for pixel; the sentence
    figure is a drawn heatmap (greys of the weight and norm maps), not a blank page."""
    import matplotlib.image
    import numpy as np

    from fairseq_rela.analysis.plots import plot_head_heatmaps
    from fairseq_rela.cli.files import save_figure

    redrawn = tmp_path / "heads.png"
    save_figure(plot_head_heatmaps(stats, title=f"{stats['attention_activation']}: checkpoint_last.pt"), str(redrawn))
    np.testing.assert_array_equal(matplotlib.image.imread(str(out / "heads.png")),
                                  matplotlib.image.imread(str(redrawn)))
    rgb = matplotlib.image.imread(str(out / "sentence-3-cross.png"))[..., :3]
    assert min(rgb.shape[:2]) > 200, rgb.shape
    greys = rgb[(rgb.max(-1) - rgb.min(-1) < 1e-6) & (rgb.min(-1) < 0.95)][:, 0]  # the Greys heatmap cells
    assert len(np.unique(greys)) > 20 and greys.size > 0.05 * rgb[..., 0].size
