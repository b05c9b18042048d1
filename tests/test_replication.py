"""examples/replication: corpus reading on the real data and the run summariser on the logs of a real
GPU run."""
import math
import subprocess
import sys

import pytest

from tests.helpers import REPO, SHARED_DATA

EXAMPLE = REPO / "examples" / "replication"
RUN = EXAMPLE / "runs" / "2026-11-23-h100-fp16"
sys.path.insert(0, str(EXAMPLE))  # summarize.py


def _prepare():
    """examples/replication/prepare.py, under its own module name."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("replication_prepare", EXAMPLE / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.e2e
@pytest.mark.realdata
def test_corpus_reads_every_source_without_losing_pairs():
    prep = _prepare()
    corpus, read_lines = prep.corpus, prep.read_lines
    parts = corpus(SHARED_DATA)
    assert len(parts["tatoeba"]) == 169_813  # one pair per line of the export
    head = parts["europarl/europarl-v7-head20k"]
    assert len(head) == 20_000 and all(d != "<d>" for d, _ in head)
    dev_de = read_lines(SHARED_DATA / "europarl/europarl7-dev.de.gz")
    assert len(parts["europarl/europarl7-dev"]) == len(dev_de) - dev_de.count("<d>")
    # U+0085 inside a line must not split it: German and English stay paired line for line
    assert len(parts["wmt-news/newssyscomb2009"]) == len(read_lines(SHARED_DATA / "wmt-news/newssyscomb2009.en.gz"))
    en, de = parts["tatoeba"][0][1], parts["tatoeba"][0][0]
    assert (en, de) == ("Hi.", "Hallo!")  # English<TAB>German, returned as (German, English)


@pytest.mark.e2e
@pytest.mark.realdata
def test_en_de_gold_mirrors_the_de_en_gold():
    read_lines, swap_talp = _prepare().read_lines, _prepare().swap_talp

    gold = read_lines(SHARED_DATA / "rwth-deen/alignment.talp")
    assert swap_talp("3-5 2p4 10-1") == "5-3 4p2 1-10"
    assert all(swap_talp(swap_talp(line)) == " ".join(line.split()) for line in gold)
    de, en = read_lines(SHARED_DATA / "rwth-deen/test.de"), read_lines(SHARED_DATA / "rwth-deen/test.en")
    for line, d, e in zip(map(swap_talp, gold), de, en):  # English index first, inside the English sentence
        assert all(int(x) <= len(e.split()) and int(y) <= len(d.split()) for x, y in
                   (link.replace("p", "-").split("-") for link in line.split()))


@pytest.mark.unit
def test_summary_of_the_gpu_run(tmp_path):
    from summarize import parse_train_log, summarise_model, table

    rows = [summarise_model(f) for f in sorted(RUN.iterdir()) if (f / "train.log").is_file()]
    assert len(rows) == 7
    by = {r["model"]: r for r in rows}
    for r in rows:
        if r["crash"] is None:  # no increase within fairseq's 2,000-update scale window: one halving per overflow
            assert r["final_loss_scale"] == pytest.approx(128 * 2.0 ** -r["overflow_steps"], rel=0.01, abs=5e-5)  # the log rounds to 4 decimals
        text = (RUN / r["model"] / "train.log").read_text()
        assert r["updates"] == max(int(x) for x in __import__("re").findall(r"num_updates[ =](\d+)", text))
    assert "Minimum loss scale reached" in by["de-en-rela-g"]["crash"]
    assert math.isnan(by["de-en-rela-i"]["valid_ppl"]) and by["de-en-softmax"]["valid_ppl"] > 1
    assert "| de-en-rela-g |" in table(rows)
    assert parse_train_log("no log") == {"train": [], "valid": [], "last": {}, "overflows": 0, "crash": None}


@pytest.mark.e2e
def test_summarize_cli_rejects_a_folder_without_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLE / "summarize.py"), str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode != 0 and "no DIR-VARIANT/train.log" in proc.stderr and "Traceback" not in proc.stderr
