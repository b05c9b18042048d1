"""The reproduction recipes (examples/reproduce) end to end on small local data, their pair table and
error paths (fairseq-rela-average: test_cli_average.py)."""
import gzip
import json
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO, SHARED_DATA

RECIPE = REPO / "examples" / "reproduce" / "recipe.py"
sys.path.insert(0, str(RECIPE.parent))
from pairs import PAIRS, VARIANTS  # noqa: E402

pytestmark = pytest.mark.e2e

TINY = ("--arch", "rela_transformer_tiny", "--log-interval", "1")
SHORT = ("--max-len-a", "0", "--max-len-b", "12")  # an untrained model's beam search would run to 200 tokens


def recipe(*args, check=True):
    proc = subprocess.run([sys.executable, str(RECIPE), *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"recipe.py {args[0]} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def lines(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="\n") as f:
        return [x[:-1] if x.endswith("\n") else x for x in f]


def write(path, rows):
    path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def wmt_corpus(tmp_path_factory):
    """WMT news De-En standing in for every WMT pair (named ro-en here: German plays Romanian)."""
    d = tmp_path_factory.mktemp("corpus-wmt")
    news = SHARED_DATA / "wmt-news"
    de = lines(news / "newssyscomb2009.de.gz") + lines(news / "newstest2010.de.gz")[:1500]
    en = lines(news / "newssyscomb2009.en.gz") + lines(news / "newstest2010.en.gz")[:1500]
    assert len(de) == len(en) and any("\x85" in x for x in de)  # U+0085 inside lines 301 and 308
    write(d / "train.ro", de)
    write(d / "train.en", en)
    write(d / "valid.ro", lines(news / "newstest2013.de.gz")[:60])
    write(d / "valid.en", lines(news / "newstest2013.en.gz")[:60])
    write(d / "test.ro", lines(news / "newstest2014.de.gz")[:53])  # 53: not a multiple of any batch size
    write(d / "test.en", lines(news / "newstest2014.en.gz")[:53])
    return d


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("work")


@pytest.mark.realdata
def test_wmt_recipe_chain(wmt_corpus, work):
    recipe("prepare", "--pair", "ro-en", "--work", work, "--corpus", wmt_corpus, "--vocab-size", "800")
    pdir = work / "ro-en"
    report = json.loads((pdir / "prepared.json").read_text())["pairs"]
    assert report["valid"] == 60 and report["test"] == 53  # evaluation sets keep every pair
    src, tgt = lines(pdir / "data/train.ro"), lines(pdir / "data/train.en")
    assert len(src) == len(tgt) == report["train"] == report["train_read"] - report["train_dropped"]
    raw_de, raw_en = lines(wmt_corpus / "train.ro"), lines(wmt_corpus / "train.en")
    i = src.index(" ".join(raw_de[301].replace("\x85", " ").split()))  # the U+0085 pair, still paired
    assert tgt[i] == " ".join(raw_en[301].split())
    assert not any("\x85" in x for x in src)

    out = recipe("train", "--pair", "ro-en", "--work", work, "--variant", "rela-g", "--cpu", "--procs", "2",
                 "--max-tokens", "2500", "--", *TINY, "--update-freq", "1", "--max-update", "12",
                 "--save-interval-updates", "2").stdout
    assert "--update-freq 5" in out  # 25000 tokens = 2500 x 2 processes x 5 (then overridden: a small test)
    ckpts = sorted(p.name for p in (pdir / "ckpt-rela-g-seed1").glob("checkpoint_*_*.pt"))
    assert len(ckpts) == 5 and "checkpoint_1_12.pt" in ckpts  # --keep-interval-updates 5
    runs = json.loads((pdir / "runs-rela-g-seed1.json").read_text())
    assert len(runs) == 1 and "CPU" in runs[0]["hardware"] and runs[0]["seconds"] > 0

    out = recipe("evaluate", "--pair", "ro-en", "--work", work, "--variant", "rela-g", "--cpu", "--", *SHORT).stdout
    res = json.loads((pdir / "eval-rela-g-seed1/result.json").read_text())
    assert res["test_sentences"] == 53 and len(lines(pdir / "eval-rela-g-seed1/hyp.detok")) == 53
    assert "--beam 4" in res["generate"] and "--lenpen 0.6" in res["generate"]
    assert res["checkpoint"].endswith("checkpoint.avg5.pt")
    assert re.match(r"nrefs:1\|case:mixed\|eff:no\|tok:13a\|smooth:exp\|version:", res["signature"])
    summary = (work / "summary.md").read_text()
    row = next(x for x in summary.split("\n") if x.startswith("| ro-en | rela-g |"))
    assert f"| {res['bleu']:.1f} | 32.9 |" in row and "CPU" in row  # ours beside the paper's
    assert "fairseq-rela-launch --nproc-per-node 2" in summary


@pytest.mark.realdata
def test_europarl_recipe_chain(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    euro = SHARED_DATA / "europarl"
    gold = SHARED_DATA / "rwth-deen"
    de, en = lines(euro / "europarl-v7-head20k.de.gz")[:1500], lines(euro / "europarl-v7-head20k.en.gz")[:1500]
    de += lines(gold / "test.de")[:3]  # gold sentences in the training text: must be removed
    en += lines(gold / "test.en")[:3]
    write(corpus / "europarl-v7.de-en.de", de)
    write(corpus / "europarl-v7.de-en.en", en)
    work = tmp_path / "work"
    recipe("prepare", "--pair", "europarl-de-en", "--work", work, "--corpus", corpus, "--rwth", gold,
           "--vocab-size", "600", "--valid-lines", "40")
    pdir = work / "europarl-de-en"
    report = json.loads((pdir / "prepared.json").read_text())["pairs"]
    assert report["removed_empty_or_rwth"] >= 3 and report["valid"] == 40 and report["test"] == 508
    assert (pdir / "data/spm.de.model").exists() and (pdir / "data/spm.en.model").exists()  # separate models
    train_en = lines(pdir / "data/train.en")
    assert all(x == x.lower() for x in train_en) and any(" , " in x for x in train_en)  # Moses, lowercased

    recipe("train", "--pair", "europarl-de-en", "--work", work, "--variant", "softmax", "--seeds", "1", "--cpu",
           "--", *TINY, "--max-update", "4", "--update-freq", "1",
           "--eval-bleu-args", '{"beam": 1, "max_len_a": 0, "max_len_b": 12}')
    out = recipe("evaluate", "--pair", "europarl-de-en", "--work", work, "--variant", "softmax", "--seeds", "1",
                 "--cpu", "--rwth", gold, "--", *SHORT).stdout
    res = json.loads((pdir / "eval-softmax-seed1/result.json").read_text())
    assert res["checkpoint"].endswith("checkpoint_best.pt") and res["test_sentences"] == 508
    per = res["alignment"]["per_setting"]
    assert set(per) == {f"{s}-{sh}" for s in ("weights", "norms", "block") for sh in ("AWO", "AWI")}
    assert all(0 <= p["best"] <= 100 and p["best"] <= p["layer2"] for p in per.values())
    summary = (work / "summary.md").read_text()
    row = next(x for x in summary.split("\n") if x.startswith("| norms-AWI |"))
    assert f"| {per['norms-AWI']['best']:.1f} (layer {per['norms-AWI']['best_layer']}) |" in row
    assert row.endswith("| 25.0 |") and "AER" in out


def test_pair_table_and_batch_plan(tmp_path):
    import sacrebleu.dataset

    assert set(PAIRS) == {"en-de", "en-fr", "en-fi", "zh-en", "ro-en", "europarl-de-en"}
    for name, pair in PAIRS.items():
        if pair.paper == "rela":  # the test sets exist in sacrebleu under these names
            for test_set in (pair.valid_set, pair.test_set):
                assert f"{pair.src}-{pair.tgt}" in sacrebleu.dataset.DATASETS[test_set].langpairs
            assert set(pair.published) <= set(VARIANTS)
        for procs in (1, 2, 4):
            out = recipe("train", "--pair", name, "--work", tmp_path, "--variant", "all", "--procs", procs,
                         "--dry-run", "--seeds", "1").stdout
            cmds = [x for x in out.split("\n") if "fairseq-rela-launch" in x]
            assert len(cmds) == len(pair.variants)
            for cmd, variant in zip(cmds, pair.variants):
                uf = int(re.search(r"--update-freq (\d+)", cmd).group(1))
                mt = int(re.search(r"--max-tokens (\d+)", cmd).group(1))
                assert uf * mt * procs == pair.tokens_per_update
                assert f"--nproc-per-node {procs}" in cmd and "--fp16" in cmd and "--cpu" not in cmd
                assert " ".join(VARIANTS[variant]) in cmd
                if pair.paper == "rela":
                    assert "--lr 7e-4" in cmd and "--warmup-updates 4000" in cmd and "--clip-norm 0.0" in cmd
                    assert "rela_transformer_wmt_en_de" in cmd and "--label-smoothing 0.1" in cmd
                else:
                    assert "rela_transformer_iwslt_de_en" in cmd and "--best-checkpoint-metric bleu" in cmd


@pytest.mark.parametrize("args,message", [
    (["prepare", "--pair", "en-xx"], "invalid choice: 'en-xx'"),
    (["train", "--pair", "ro-en", "--variant", "relu"], "invalid choice: 'relu'"),
    (["prepare", "--pair", "ro-en", "--corpus", "EMPTY"], "train.ro: no such corpus file"),
    (["train", "--pair", "ro-en", "--variant", "softmax", "--procs", "3", "--dry-run"],
     "3 processes x --max-tokens 6250 does not divide ro-en's 25000 tokens per update"),
    (["train", "--pair", "europarl-de-en", "--variant", "softmax", "--procs", "3", "--dry-run"], "does not divide"),
    (["train", "--pair", "ro-en", "--variant", "softmax"], "not prepared"),
    (["prepare", "--pair", "europarl-de-en", "--corpus", "EMPTY"], "--rwth DIR"),
    (["evaluate", "--pair", "ro-en", "--variant", "softmax"], "no trained model"),
])
def test_bad_input_one_line(tmp_path, args, message):
    (tmp_path / "EMPTY").mkdir()
    args = [str(tmp_path / a) if a == "EMPTY" else a for a in args]
    proc = recipe(*args, "--work", tmp_path / "w", check=False)
    assert proc.returncode != 0
    err = proc.stderr.strip().split("\n")
    assert message in err[-1] and "Traceback" not in proc.stderr and "error:" in err[-1]
    assert not (tmp_path / "w" / "ro-en" / "prepared.json").exists()
