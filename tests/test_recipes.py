"""The reproduction recipes (examples/reproduce) end to end on small local data, their pair table and
error paths, reruns and signals (fairseq-rela-average: test_cli_average.py)."""
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, SHARED_DATA

RECIPE = REPO / "examples" / "reproduce" / "recipe.py"
sys.path.insert(0, str(RECIPE.parent))
import recipe as recipe_module  # noqa: E402
from pairs import PAIRS, VARIANTS  # noqa: E402

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


@pytest.mark.e2e
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
    assert res["checkpoint"].endswith("eval-rela-g-seed1/checkpoint.avg5.pt") and len(res["averaged"]) == 5
    assert re.match(r"nrefs:1\|case:mixed\|eff:no\|tok:13a\|smooth:exp\|version:", res["signature"])
    summary = (work / "summary.md").read_text()
    row = next(x for x in summary.split("\n") if x.startswith("| ro-en | rela-g |"))
    assert f"| {res['bleu']:.1f} | 32.9 |" in row and "CPU" in row  # ours beside the paper's
    assert row.endswith("| average of last 5 |")
    assert "fairseq-rela-launch --nproc-per-node 2" in summary


@pytest.mark.e2e
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
    assert (pdir / "spm/spm.de.model").exists() and (pdir / "spm/spm.en.model").exists()  # separate models
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
    sources = ("weights", "norms", "block", "alti", "rollout-weights", "rollout-norms", "rollout-block", "rollout-alti")
    assert set(per) == {f"{s}-{sh}" for s in sources for sh in ("AWO", "AWI")}
    assert all(0 <= p["best"] <= 100 and p["best"] <= p["layer2"] for p in per.values())
    summary = (work / "summary.md").read_text()
    row = next(x for x in summary.split("\n") if x.startswith("| norms-AWI |"))
    assert f"| {per['norms-AWI']['best']:.1f} (layer {per['norms-AWI']['best_layer']}) |" in row
    assert row.endswith("| 25.0 |") and "AER" in out


@pytest.mark.e2e
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


@pytest.mark.e2e
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


# ---------------------------------------------------------------- reruns, short runs, signals, checkouts
@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    """400 training pairs of WMT news De-En as ro-en: prepares in seconds."""
    d = tmp_path_factory.mktemp("corpus-tiny")
    news = SHARED_DATA / "wmt-news"
    for split, name, n in (("train", "newstest2010", 400), ("valid", "newstest2013", 20), ("test", "newstest2014", 13)):
        write(d / f"{split}.ro", lines(news / f"{name}.de.gz")[:n])
        write(d / f"{split}.en", lines(news / f"{name}.en.gz")[:n])
    return d


@pytest.fixture(scope="module")
def tiny_work(tiny_corpus, tmp_path_factory):
    """A work folder with ro-en prepared from ``tiny_corpus`` (each test trains its own variant)."""
    work = tmp_path_factory.mktemp("work-tiny")
    recipe("prepare", "--pair", "ro-en", "--work", work, "--corpus", tiny_corpus, "--vocab-size", "300")
    return work


def snapshot(work):
    """Every file under ``work`` with its modification time."""
    return {p.relative_to(work): p.stat().st_mtime_ns for p in sorted(work.rglob("*")) if p.is_file()}


def unfinished(pdir):
    """Step folders that look finished without being so, and leftovers of a step that were not cleared."""
    hidden = [p.name for p in pdir.iterdir() if p.name.startswith(".")]
    unmarked = [p.name for p in pdir.iterdir() if p.is_dir() and p.name in ("data", "spm", "bin")
                and not (p / "step.json").is_file()]
    return hidden + unmarked


def processes():
    """pid -> (parent pid, process group, state) of every process."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            out[int(d)] = (int(fields[1]), int(fields[2]), fields[0])
    return out


def descendants(pid):
    procs = processes()
    out, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, (pp, _, _) in procs.items() if pp == parent]
        out.update(kids)
        todo += kids
    return out


def interrupt(signum, ready, *args):
    """Start the recipe, send ``signum`` once ``ready(its descendants' command lines)``; returns the recipe's
    result and the processes it had started (or that share their process groups) still alive afterwards."""
    proc = subprocess.Popen([sys.executable, str(RECIPE), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while True:
        kids = descendants(proc.pid)
        cmdlines = []
        for k in kids:
            try:
                cmdlines.append(open(f"/proc/{k}/cmdline").read().replace("\0", " "))
            except OSError:
                pass
        if ready(cmdlines) or proc.poll() is not None or time.time() > deadline:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the recipe ended before the signal:\n{proc.stderr.read()[-2000:]}"
    groups = {processes().get(k, (0, 0, ""))[1] for k in kids} - {0, os.getpgid(0)}
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    for _ in range(50):  # killed processes vanish within moments
        alive = [p for p, (_, group, state) in processes().items() if state != "Z" and (p in kids or group in groups)]
        if not alive:
            break
        time.sleep(0.1)
    for p in alive:  # leave nothing behind, then fail
        os.kill(p, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), alive


@pytest.mark.unit
def test_step_made_whole_or_not_at_all(tmp_path):
    step = recipe_module.Step(tmp_path / "s", {"size": 1})
    calls = []

    def build(tmp, fail=False):
        calls.append(tmp)
        (tmp / "part").write_text("x")
        if fail:
            raise recipe_module.Interrupted(signal.SIGTERM)
        (tmp / "whole").write_text("x")
        return {"n": len(calls)}

    with pytest.raises(recipe_module.Interrupted):
        step.run(lambda tmp: build(tmp, fail=True), {}, force=False)
    assert not step.dest.exists() and os.listdir(tmp_path) == []  # nothing half-made is left
    step.tmp.mkdir()
    (step.tmp / "stale").write_text("x")  # as after a SIGKILL: redone from a clean folder
    done = step.run(build, {}, force=False)
    assert sorted(os.listdir(step.dest)) == ["part", "step.json", "whole"] and done["report"] == {"n": 2}
    assert step.run(build, {}, force=False) == done and len(calls) == 2  # finished: not redone
    assert step.run(build, {"upstream": "new"}, force=False)["report"] == {"n": 3}  # other inputs: redone
    other = recipe_module.Step(step.dest, {"size": 2})
    with pytest.raises(recipe_module.RecipeError, match=r"other options \(size 1, now 2\): pass --force"):
        other.run(build, {}, force=False)
    assert len(calls) == 3 and (step.dest / "whole").exists()
    assert other.run(build, {}, force=True)["options"] == {"size": 2} and os.listdir(tmp_path) == ["s"]


@pytest.mark.e2e
@pytest.mark.realdata
def test_prepare_reruns_and_resumes(tiny_corpus, tmp_path):
    work = tmp_path / "work"
    pdir = work / "ro-en"
    args = ("prepare", "--pair", "ro-en", "--work", work, "--corpus", tiny_corpus)
    # SIGTERM while a step's console script runs (spm_train or fairseq-preprocess): nothing looks finished
    proc, alive = interrupt(signal.SIGTERM, lambda cmds: any("sentencepiece" in c or "fairseq-preprocess" in c
                                                             for c in cmds), *args, "--vocab-size", "300")
    assert proc.returncode == 128 + signal.SIGTERM and not alive, proc.stderr[-2000:]
    assert "interrupted by SIGTERM" in proc.stderr.strip().split("\n")[-1]
    assert not (pdir / "prepared.json").exists() and not unfinished(pdir)
    assert (pdir / "data/step.json").exists() and not (pdir / "bin").exists()
    out = recipe(*args, "--vocab-size", "300").stdout  # resumed: the finished step is kept
    assert "data: done already" in out and "bin: done already" not in out and not unfinished(pdir)
    before = snapshot(pdir)
    out = recipe(*args, "--vocab-size", "300").stdout  # the second run: nothing redone
    assert all(f"{s}: done already" in out for s in ("data", "spm", "bin")) and snapshot(pdir) == before
    proc = recipe(*args, "--vocab-size", "320", check=False)  # other options: one line, folder untouched
    err = proc.stderr.strip().split("\n")
    assert proc.returncode == 1 and len(err) == 1 and "Traceback" not in proc.stderr
    assert "error:" in err[0] and "spm.vocab_size 300, now 320" in err[0] and "--force" in err[0]
    assert snapshot(pdir) == before
    out = recipe(*args, "--vocab-size", "320", "--force").stdout  # only what changed is redone
    assert "data: done already" in out and "spm: done already" not in out
    after = snapshot(pdir)
    assert after[Path("data/train.ro")] == before[Path("data/train.ro")]
    assert after[Path("bin/dict.ro.txt")] != before[Path("bin/dict.ro.txt")]
    assert json.loads((pdir / "prepared.json").read_text())["options"]["spm"]["vocab_size"] == 320
    assert not unfinished(pdir)


@pytest.mark.e2e
@pytest.mark.realdata
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_train_signal_stops_every_rank(tiny_work, signum):
    """A signal to the recipe reaches fairseq-rela-launch and both its ranks; exit 128 + signal."""
    name = f"softmax-seed{signum}"
    proc, alive = interrupt(signum, lambda cmds: sum("fairseq-train" in c for c in cmds) == 2,
                            "train", "--pair", "ro-en", "--work", tiny_work, "--variant", "softmax", "--seeds", signum,
                            "--cpu", "--procs", "2", "--max-tokens", "2500", "--", *TINY, "--max-update", "100000")
    assert proc.returncode == 128 + signum and not alive, proc.stderr[-2000:]
    assert proc.stderr.strip().split("\n")[-1].startswith(f"recipe.py: interrupted by {signal.Signals(signum).name}")
    runs = json.loads((tiny_work / "ro-en" / f"runs-{name}.json").read_text())
    assert [r["status"] for r in runs] == [f"interrupted ({signal.Signals(signum).name})"]


@pytest.mark.e2e
@pytest.mark.realdata
def test_short_run_evaluates_the_checkpoints_there_are(tiny_work):
    """--max-update below the recipe's checkpoint interval: evaluate says so and uses checkpoint_last.pt;
    trained on to two interval checkpoints, the evaluation is redone on their average."""
    pdir = tiny_work / "ro-en"
    train = ("train", "--pair", "ro-en", "--work", tiny_work, "--variant", "rela-i", "--cpu", "--max-tokens", "2500")
    tiny = ("--", *TINY, "--update-freq", "1")
    evaluate = ("evaluate", "--pair", "ro-en", "--work", tiny_work, "--variant", "rela-i", "--cpu", "--", *SHORT)
    proc = recipe(*train, *tiny, "--max-update", "3")
    assert "leaves 0 interval checkpoint(s), not 5: evaluate will use checkpoint_last.pt" in proc.stderr
    assert "trained already" in recipe(*train, *tiny, "--max-update", "3").stdout  # finished: no extra update
    assert len(json.loads((pdir / "runs-rela-i-seed1.json").read_text())) == 1
    proc = recipe(*evaluate)
    assert "holds no interval checkpoint" in proc.stderr and "evaluating checkpoint_last.pt" in proc.stderr
    res = json.loads((pdir / "eval-rela-i-seed1/result.json").read_text())
    assert res["checkpoint"].endswith("ckpt-rela-i-seed1/checkpoint_last.pt") and "averaged" not in res
    assert res["checkpoint_used"].startswith("checkpoint_last.pt") and res["test_sentences"] == 13
    row = next(x for x in (tiny_work / "summary.md").read_text().split("\n") if x.startswith("| ro-en | rela-i |"))
    assert "| checkpoint_last.pt (no interval checkpoint; recipe: average of last 5) |" in row

    proc = recipe(*train, *tiny, "--max-update", "6", check=False)  # another command on a trained run: refused
    assert proc.returncode == 1 and "--max-update 3, now 6" in proc.stderr and "--force" in proc.stderr
    proc = recipe(*train, "--force", *tiny, "--max-update", "6", "--save-interval-updates", "2")
    assert "leaves 3 interval checkpoint(s), not 5: evaluate will use the average of those 3" in proc.stderr
    ckpts = sorted((pdir / "ckpt-rela-i-seed1").glob("checkpoint_*_*.pt"))
    assert [int(p.stem.split("_")[-1]) for p in ckpts] == [4, 6]  # resumed at update 3
    proc = recipe(*evaluate)  # the checkpoints changed: evaluated again without --force
    assert "holds 2 interval checkpoint(s), the recipe averages the last 5: averaging those 2" in proc.stderr
    res = json.loads((pdir / "eval-rela-i-seed1/result.json").read_text())
    assert res["averaged"] == [p.name for p in ckpts] and res["checkpoint"].endswith("eval-rela-i-seed1/checkpoint.avg2.pt")
    assert res["checkpoint_used"] == "average of last 2 (recipe: 5)" and os.path.isfile(res["checkpoint"])
    assert "eval-rela-i-seed1/checkpoint.avg2.pt" in res["generate"] and ".partial" not in json.dumps(res)
    assert "done already" in recipe(*evaluate).stdout  # nothing changed: not redone


@pytest.mark.e2e
def test_user_dir_is_the_copy_the_console_scripts_import(tmp_path):
    """From a second checkout, --user-dir names the fairseq_rela that fairseq-train imports, not the
    checkout's own (fairseq: "not globally unique")."""
    other = tmp_path / "checkout2"
    (other / "examples").mkdir(parents=True)
    shutil.copytree(RECIPE.parent, other / "examples" / "reproduce")
    (other / "fairseq_rela").mkdir()
    (other / "fairseq_rela" / "__init__.py").write_text("")
    imported = subprocess.run([sys.executable, "-c", "import fairseq_rela, os; print(os.path.dirname(fairseq_rela.__file__))"],
                              cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    proc = subprocess.run([sys.executable, str(other / "examples/reproduce/recipe.py"), "train", "--pair", "ro-en",
                           "--work", tmp_path / "w", "--variant", "softmax", "--dry-run"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"--user-dir {imported} " in proc.stdout and str(other) not in proc.stdout
    assert f"the console scripts import {imported}, not this checkout's {other / 'fairseq_rela'}" in proc.stderr


@pytest.mark.unit
def test_sacrebleu_offline_without_cache_is_one_line_at_once(tmp_path, monkeypatch):
    """No cached test set and statmt.org unreachable: refused before sacrebleu starts (it would wait on the
    network without a time limit)."""
    import sacrebleu.utils

    monkeypatch.setattr(sacrebleu.utils, "SACREBLEU_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(recipe_module.corpus, "reachable", lambda url, timeout=5.0: "statmt.org:443 unreachable (x)")
    started = []
    monkeypatch.setattr(recipe_module, "run_child", lambda *a, **k: started.append(a))
    with pytest.raises(recipe_module.RecipeError, match=r"sacrebleu -t wmt14/full: not in sacrebleu's cache "
                       r".*empty-cache\) and statmt.org:443 unreachable \(x\): no internet\? pass --corpus DIR"):
        recipe_module.sacrebleu_echo("wmt14/full", PAIRS["en-de"], tmp_path / ".test")
    assert not started


@pytest.mark.unit
@pytest.mark.parametrize("step,flag,value", [("prepare", "--vocab-size", "0"), ("prepare", "--spm-sentences", "-1"),
                                             ("train", "--max-tokens", "0"), ("train", "--max-tokens", "-5"),
                                             ("train", "--procs", "0"), ("prepare", "--valid-lines", "0"),
                                             ("prepare", "--max-train-pairs", "-3"), ("prepare", "--workers", "0"),
                                             ("train", "--master-port", "0")])
def test_zero_and_negative_sizes_are_one_line_before_any_work(step, flag, value, capsys):
    """0 is not "the default" and a negative size does not reach fairseq: the parser refuses both."""
    head = [step, "--pair", "ro-en", *(["--variant", "softmax", "--dry-run"] if step == "train" else [])]
    with pytest.raises(SystemExit) as exit_:
        recipe_module.get_parser().parse_args([*head, flag, value])
    assert exit_.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"recipe.py {step}: error: argument {flag}: '{value}': must be >= 1", err
    ok = recipe_module.get_parser().parse_args([*head, flag, "1"])
    assert getattr(ok, flag[2:].replace("-", "_")) == 1
    if flag == "--master-port":
        with pytest.raises(SystemExit):
            recipe_module.get_parser().parse_args([*head, flag, "65536"])
        assert capsys.readouterr().err.strip().splitlines()[-1].endswith("'65536': must be <= 65535")


# ---------------------------------------------------------------- issue 36: inputs fingerprinted
@pytest.mark.e2e
def test_an_edited_corpus_file_prepares_again(tmp_path):
    """The data step records what it read (size, modification time): an edited corpus file redoes it (and
    the steps after it) instead of "done already" over the old text; with models trained on the old data
    it is one line; a corpus holding both FILE and FILE.gz is one line (which one is meant?)."""
    from fairseq_rela.toy import write_toy_corpus

    toy, corpus = tmp_path / "toy", tmp_path / "C"
    write_toy_corpus(toy)
    corpus.mkdir()
    for split in ("train", "valid", "test"):
        shutil.copy(toy / f"{split}.src", corpus / f"{split}.ro")
        shutil.copy(toy / f"{split}.tgt", corpus / f"{split}.en")
    pdir = tmp_path / "W" / "ro-en"
    args = ("prepare", "--pair", "ro-en", "--work", tmp_path / "W", "--corpus", corpus, "--vocab-size", "60",
            "--workers", "1", "--max-train-pairs", "300")
    recipe(*args)
    old = lines(pdir / "data" / "test.en")
    write(corpus / "test.en", ["CHANGED", *lines(corpus / "test.en")[1:]])
    proc = recipe(*args)
    assert f"{corpus / 'test.en'} changed since" in proc.stderr and "data: done already" not in proc.stdout
    assert lines(pdir / "data" / "test.en") == ["CHANGED", *old[1:]] and not unfinished(pdir)
    assert "CHANGED" in (pdir / "spm" / "test.spm.en").read_text()  # the steps after it too
    assert all(f"{s}: done already" in recipe(*args).stdout for s in ("data", "spm", "bin"))  # unchanged: kept
    (pdir / "ckpt-softmax-seed1").mkdir()
    write(corpus / "test.en", old)
    before = snapshot(pdir)
    proc = recipe(*args, check=False)
    err = proc.stderr.strip().split("\n")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and err[-1].startswith("recipe.py: error: ")
    assert "test.en changed since" in err[-1] and "models trained on the old data (ckpt-softmax-seed1)" in err[-1]
    assert snapshot(pdir) == before
    (pdir / "ckpt-softmax-seed1").rmdir()
    shutil.copy(corpus / "train.ro", corpus / "train.ro.gz")
    proc = recipe(*args, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert re.search(r"error: .*C holds both train\.ro and train\.ro\.gz", proc.stderr.strip().split("\n")[-1])


@pytest.mark.e2e
def test_an_empty_training_or_test_set_is_one_line_before_sentencepiece(tmp_path):
    """No training pair left after cleaning (here: an empty file), or an empty test set, is one line from the
    data step, not SentencePiece's failure after a data/ folder that looks finished."""
    corpus = tmp_path / "C"
    corpus.mkdir()
    for split, rows in (("train", ["a b", ""]), ("valid", ["a"]), ("test", ["b"])):
        write(corpus / f"{split}.ro", rows)
        write(corpus / f"{split}.en", [r.upper() for r in rows][:1] + [""] * (len(rows) - 1))
    write(corpus / "train.en", ["", "X"])  # every pair has an empty side
    args = ("prepare", "--pair", "ro-en", "--work", tmp_path / "W", "--corpus", corpus, "--vocab-size", "50",
            "--workers", "1")
    proc = recipe(*args, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().split("\n")[-1] == ("recipe.py: error: no training pair left: 2 read, 2 dropped (an "
                                                   "empty side or a side over 1500 characters, or a length ratio "
                                                   "over 3.0)")
    assert not (tmp_path / "W" / "ro-en" / "data").exists() and not unfinished(tmp_path / "W" / "ro-en")
    write(corpus / "train.en", ["A B", "X"])
    write(corpus / "train.ro", ["a b", "x"])
    write(corpus / "test.ro", [])
    write(corpus / "test.en", [])
    proc = recipe(*args, check=False)
    assert proc.returncode == 1 and re.search(r"error: the test set is empty \(.*test\.ro, .*test\.en\)$",
                                              proc.stderr.strip().split("\n")[-1]), proc.stderr[-2000:]
