"""examples/replication: corpus reading on the real data and the run summariser on the logs of a real
GPU run."""
import gzip
import json
import math
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO, SHARED_DATA

EXAMPLE = REPO / "examples" / "replication"
RUN = EXAMPLE / "runs" / "2026-11-23-h100-fp16"
RUN_H200 = EXAMPLE / "runs" / "2026-12-04-h200-fp32"  # fp32, evaluation cut short by the deadline
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


def _generated(path):
    """``{id: hypothesis}`` of a gzipped fairseq-generate output, read here without summarize.py."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return {int(line.split("\t")[0][2:]): line.rstrip("\n").split("\t")[2] for line in f if line.startswith("D-")}


@pytest.mark.e2e
@pytest.mark.realdata
def test_papers_table_of_the_h200_run(tmp_path):
    """summarize.py on a real GPU run whose newstest2014 translations were cut short: BLEU on the sentences
    every model of the direction translated, the best layer of each weights/norms x AWO/AWI column, the
    cross-attention means and the ratios to softmax, each recomputed here from the run's files."""
    import re

    import sacrebleu
    from sacremoses import MosesDetokenizer
    from summarize import AER_COLUMNS, add_bleu, add_ratios, best_layers, cross_mean, model_order, papers_table, \
        summarise_model

    read_lines = _prepare().read_lines
    for lang in ("de", "en"):
        (tmp_path / f"newstest2014.raw.{lang}").write_text(
            "\n".join(read_lines(SHARED_DATA / f"wmt-news/newstest2014.{lang}.gz")) + "\n", encoding="utf-8")
        (tmp_path / f"rwth.tok.{lang}").write_text((SHARED_DATA / f"rwth-deen/test.{lang}").read_text(encoding="utf-8"))
    folders = sorted((f for f in RUN_H200.iterdir() if (f / "train.log").is_file()), key=model_order)
    rows = [summarise_model(f) for f in folders]
    add_bleu(rows, folders, tmp_path)
    add_ratios(rows)
    by = {r["model"]: r for r in rows}
    assert [r["model"] for r in rows] == ["de-en-softmax", "de-en-sparsemax", "de-en-entmax15", "de-en-rela-i",
                                          "de-en-rela-g", "en-de-softmax", "en-de-rela-g"]
    refs = read_lines(SHARED_DATA / "wmt-news/newstest2014.en.gz")
    hyps = {r["model"]: _generated(RUN_H200 / r["model"] / "gen-newstest2014.txt.gz") for r in rows[:5]}
    common = sorted(set.intersection(*map(set, hyps.values())))
    assert 0 < len(common) < len(refs)  # cut short, so scored on a subset
    detok = MosesDetokenizer(lang="en")
    for name, h in hyps.items():
        expected = sacrebleu.corpus_bleu([detok.detokenize(h[i].split()) for i in common], [[refs[i] for i in common]])
        assert by[name]["bleu_newstest2014"] == pytest.approx(expected.score, abs=0.006)
        assert by[name]["bleu_newstest2014_sentences"] == [len(common), len(refs)]
    table = papers_table(rows)
    assert f"({len(common)}/{len(refs)})" in table
    for r, f in zip(rows, folders):
        printed = (f / "analysis" / "alignment.txt").read_text().splitlines()  # fairseq-rela-analyze's own table
        header = printed[1].split()
        layers = [line.split() for line in printed[2:] if line.split() and line.split()[0].isdigit()]
        for column in AER_COLUMNS:
            i = header.index(column)
            assert 100 * best_layers(r)[column][0] == pytest.approx(min(float(x[i]) for x in layers), abs=0.051)
        cross = json.loads((f / "analysis" / "stats.json").read_text())["attention"]["cross"]
        for key in ("sparsity_mean", "null_rate_mean", "head_jsd"):
            assert cross_mean(r, key) == pytest.approx(sum(s[key] for s in cross.values()) / len(cross))
    valid = {}  # perplexity by update, read from each log here
    for r in rows:
        text = (RUN_H200 / r["model"] / "train.log").read_text()
        valid[r["model"]] = {int(u): float(p) for p, u in re.findall(r"valid on 'valid' subset .*?\| ppl ([\d.]+) .*?"
                                                                     r"\| num_updates (\d+)", text)}
    for d in ("de-en", "en-de"):
        group = [m for m in valid if m.startswith(d)]
        u = max(set.intersection(*(set(valid[m]) for m in group)))
        for m in group:
            assert by[m]["valid_ppl_vs_softmax"] == (u, pytest.approx(valid[m][u] / valid[f"{d}-softmax"][u]))
            speed = by[m]["updates"] / by[m]["train_seconds"]
            soft = by[f"{d}-softmax"]["updates"] / by[f"{d}-softmax"]["train_seconds"]
            assert by[m]["updates_vs_softmax"] == pytest.approx(speed / soft)
    assert all(r["final_loss_scale"] is None for r in rows)  # fp32: no loss scale in the logs

    # A model that was never decoded, one that never validated and a layer with no head JSD (too few heads
    # attend) leave the other models' figures alone.
    import shutil

    run = tmp_path / "run"
    shutil.copytree(RUN_H200, run)
    (run / "de-en-sparsemax" / "gen-newstest2014.txt.gz").unlink()
    log = run / "de-en-rela-i" / "train.log"
    log.write_text("".join(line for line in log.read_text().splitlines(True) if "valid on 'valid'" not in line))
    stats = run / "de-en-rela-g" / "analysis" / "stats.json"
    data = json.loads(stats.read_text())
    data["attention"]["cross"]["0"]["head_jsd"] = None
    stats.write_text(json.dumps(data))
    folders = sorted((f for f in run.iterdir() if (f / "train.log").is_file()), key=model_order)
    changed = [summarise_model(f) for f in folders]
    add_bleu(changed, folders, tmp_path)
    add_ratios(changed)
    after = {r["model"]: r for r in changed}
    assert after["de-en-sparsemax"]["bleu_newstest2014"] is None and after["de-en-softmax"]["bleu_newstest2014"] is not None
    assert after["de-en-rela-i"]["valid_ppl_vs_softmax"] is None
    assert after["de-en-rela-g"]["valid_ppl_vs_softmax"] == by["de-en-rela-g"]["valid_ppl_vs_softmax"]
    jsd = [s["head_jsd"] for s in json.loads((RUN_H200 / "de-en-rela-g" / "analysis" / "stats.json").read_text())
           ["attention"]["cross"].values()]
    assert cross_mean(after["de-en-rela-g"], "head_jsd") == pytest.approx(sum(jsd[1:]) / (len(jsd) - 1))
    assert "| de-en-rela-g |" in papers_table(changed)


@pytest.mark.e2e
def test_gpu_run_rejects_an_unknown_step_before_any_work(tmp_path):
    proc = subprocess.run(["bash", str(EXAMPLE / "gpu_run.sh"), "bin", "gold", str(tmp_path / "out")],
                          capture_output=True, text=True, env={**os.environ, "STEPS": "analyze analyse"})
    assert proc.returncode == 2 and not (tmp_path / "out").exists()
    assert proc.stderr.strip().splitlines() == ["gpu_run.sh: error: STEPS: unknown step 'analyse' "
                                                "(train analyze rwth newstest2014)"]


@pytest.mark.e2e
def test_summarize_cli_rejects_a_folder_without_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLE / "summarize.py"), str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode != 0 and "no DIR-VARIANT/train.log" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, str(EXAMPLE / "summarize.py"), str(RUN_H200), "--data", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"summarize.py: error: --data {tmp_path}: no newstest2014.raw.de, "
                                                "newstest2014.raw.en, rwth.tok.de, rwth.tok.en "
                                                "(prepare.py's output folder is needed)"]


@pytest.mark.unit
def test_multi30k_summary_reads_a_resumed_run_as_one(tmp_path):
    from summarize_multi30k import stop_reason, summarise, training_seconds, trend

    def line(kind, epoch, updates, ppl, wall=None):
        tail = f" | wall {wall}" if wall is not None else ""
        if kind == "valid":
            return (f"x | INFO | valid | epoch {epoch:03d} | valid on 'valid' subset | loss 5 | ppl {ppl} | "
                    f"num_updates {updates}")
        return f"x | INFO | train | epoch {epoch:03d} | loss 5 | ppl {ppl} | wps 100 | num_updates {updates}{tail}"

    folder, start = tmp_path / "de-en-rela-g", "x | INFO | Preparing to load checkpoint ckpt/checkpoint_last.pt"
    folder.mkdir()
    (folder / "train.log").write_text("\n".join([
        start, "x | INFO | No existing checkpoint found", line("train", 1, 10, 50, 700),
        start, "x | INFO | No existing checkpoint found",  # deleted and trained from scratch
        line("train", 1, 10, 50, 100), line("valid", 1, 10, 40),
        line("train", 2, 20, 30, 210), line("valid", 2, 20, 25),  # stopped after validating, before saving
        start, "x | INFO | Loaded checkpoint ckpt/checkpoint_last.pt (epoch 2 @ 10 updates)",
        line("train", 2, 20, 30, 300), line("valid", 2, 20, 24),  # the resume trains epoch 2 again
        line("train", 3, 30, 20, 590), line("valid", 3, 30, 26), "x | train_inner | epoch 004: wall=700",
        start, "x | INFO | Loaded checkpoint ckpt/checkpoint_last.pt (epoch 4 @ 30 updates)"]) + "\n")
    assert training_seconds(folder) == 210 + 590
    row = summarise(folder, refs=["a"])
    assert row["valid_curve"] == [(10, 40.0), (20, 24.0), (30, 26.0)] and row["valid_ppl_best"] == 24.0
    assert row["epochs"] == 3 and row["bleu"] is None
    assert row["stopped"] is None  # the last piece was cut off
    assert abs(trend(row["valid_curve"], 2) - ((26 / 40) ** 0.5 - 1)) < 1e-12 and trend(row["valid_curve"], 3) is None
    with open(folder / "train.log", "a") as f:  # a further piece that patience ends
        f.write(line("train", 4, 40, 20, 100) + "\n" + line("valid", 4, 40, 27) + "\n"
                "x | INFO | early stop since valid performance hasn't improved for last 2 runs\n"
                "x | INFO | done training in 100.0 seconds\n")
    assert summarise(folder, refs=["a"])["stopped"] == "patience"
    with open(folder / "train.log", "a") as f:  # resumed with a larger epoch limit: running again
        f.write(start + "\n" + line("train", 5, 50, 20, 100) + "\n")
    assert stop_reason(folder) is None

    for model in (EXAMPLE / "runs" / "2026-11-23-cpu-multi30k").glob("de-en-*"):  # real logs
        measured = int((model / "times.txt").read_text().split("train_seconds")[1].split()[0])
        pieces = (model / "train.log").read_text().count("Loaded checkpoint") + 1
        assert stop_reason(model) == "max epoch"
        if pieces == 1:  # multi30k.sh timed this piece itself, start-up included
            assert 0 <= measured - training_seconds(model) < 30
        else:  # times.txt holds only the last piece
            assert training_seconds(model) > measured


@pytest.mark.unit
def test_multi30k_summary_tests_bleu_against_softmax(tmp_path):
    """The paired bootstrap: a system far from softmax gets a small p, one equal to it does not."""
    from summarize_multi30k import significance

    refs = [f"the sentence number {i} is about a dog in the park" for i in range(60)]
    broken = [f"a cat {i}" for i in range(60)]
    rows = [{"variant": v, "bleu_ci95": None, "bleu_p_vs_softmax": None} for v in ("softmax", "rela-g", "rela-i")]
    near = refs[:3] + broken[3:6] + refs[6:]  # as good as softmax's, on other sentences
    significance(rows, {"softmax": broken[:3] + refs[3:], "rela-g": broken, "rela-i": near}, refs, samples=200)
    soft, far, same = rows
    assert soft["bleu_p_vs_softmax"] is None and soft["bleu_ci95"] > 0
    assert far["bleu_p_vs_softmax"] < 0.01 and same["bleu_p_vs_softmax"] > 0.1
    rows = [{"variant": v, "bleu_ci95": None, "bleu_p_vs_softmax": None} for v in ("rela-g", "rela-i", "entmax15")]
    significance(rows, {"rela-g": near, "rela-i": refs, "entmax15": None}, refs, samples=200)  # no softmax in the run
    assert all(r["bleu_p_vs_softmax"] is None for r in rows)  # nothing to compare with, but each its own interval:
    assert rows[0]["bleu_ci95"] > 0 and rows[1]["bleu_ci95"] == 0  # perfect in every resample: no spread
    assert rows[2]["bleu_ci95"] is None  # no complete translation

    run, data = tmp_path / "run", tmp_path / "data"  # the CLI writes the test's result into results.json
    data.mkdir()
    (data / "test.raw.en").write_text("\n".join(refs) + "\n")
    for variant, hyps in (("softmax", refs), ("rela-g", broken)):
        (run / f"de-en-{variant}").mkdir(parents=True)
        (run / f"de-en-{variant}" / "train.log").write_text("")
        output = "".join(f"D-{i}\t-0.1\t{h}\n" for i, h in enumerate(hyps))
        if variant == "softmax":
            (run / f"de-en-{variant}" / "gen-test.txt").write_text(output)
        else:  # a run folder keeps its hypotheses gzipped
            with gzip.open(run / f"de-en-{variant}" / "gen-test.txt.gz", "wt", encoding="utf-8") as f:
                f.write(output)
    subprocess.run([sys.executable, str(EXAMPLE / "summarize_multi30k.py"), run, "--data", data], check=True,
                   capture_output=True)
    rows = {r["variant"]: r for r in json.loads((run / "results.json").read_text())}
    assert rows["rela-g"]["bleu_p_vs_softmax"] < 0.01 and rows["softmax"]["bleu_ci95"] is not None


@pytest.mark.unit
def test_multi30k_summary_compares_with_another_runs_softmax(tmp_path):
    """--softmax-log: softmax's validation curve from another run gives the ratio at the same update."""
    from summarize_multi30k import ratio_to_softmax

    assert ratio_to_softmax([(10, 8.0), (20, 6.0), (30, 5.0)], [(10, 4.0), (20, 5.0)]) == (20, 1.2)
    assert ratio_to_softmax([(15, 8.0)], [(10, 4.0)]) is None

    def valid(epoch, updates, ppl):
        return f"x | INFO | valid | epoch {epoch:03d} | valid on 'valid' subset | loss 5 | ppl {ppl} | num_updates {updates}"

    run, data, other = tmp_path / "run", tmp_path / "data", tmp_path / "other.log"
    data.mkdir()
    (data / "test.raw.en").write_text("a dog\n")
    (run / "de-en-entmax15").mkdir(parents=True)
    (run / "de-en-entmax15" / "train.log").write_text(valid(1, 10, 9.0) + "\n" + valid(2, 20, 6.0) + "\n")
    other.write_text(valid(1, 10, 8.0) + "\n" + valid(2, 20, 5.0) + "\n" + valid(3, 30, 4.0) + "\n")
    script = [sys.executable, str(EXAMPLE / "summarize_multi30k.py"), run, "--data", data]
    done = subprocess.run(script + ["--softmax-log", other], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    row = json.loads((run / "results.json").read_text())[0]
    assert row["valid_ppl_vs_softmax"] == [20, 1.2]
    assert "1.200 (20)" in (run / "results.md").read_text() and str(other) in (run / "results.md").read_text()
    ratios = (run / "results.md").read_text().split("at each update both validated:")[1].split("\n\n")[1]
    assert ratios.splitlines()[2:] == [f"| 10 | {9 / 8:.3f} |", f"| 20 | {6 / 5:.3f} |"]  # every common update
    for bad, says in ((tmp_path / "missing.log", "no such file"), (data / "test.raw.en", "no validation lines")):
        done = subprocess.run(script + ["--softmax-log", bad], capture_output=True, text=True)
        assert done.returncode == 1 and says in done.stderr and "Traceback" not in done.stderr
    (run / "de-en-softmax").mkdir()
    (run / "de-en-softmax" / "train.log").write_text(valid(1, 10, 8.0) + "\n")
    done = subprocess.run(script + ["--softmax-log", other], capture_output=True, text=True)
    assert done.returncode == 1 and "has its own softmax" in done.stderr


def _toy_replication_data(root):
    """A toy stand-in for prepare.py's output: sentence-piece-marked words (``▁w3``), binarised with one joint
    dictionary as De-En (test = "newstest2014", test1 = "RWTH"), the RWTH gold (1-based talp) and the
    references summarize.py reads."""
    from fairseq_rela.toy import write_toy_corpus

    from tests.helpers import run_cli

    raw = root / "raw"
    write_toy_corpus(raw, splits=(("train", 600), ("valid", 20), ("test", 45), ("test1", 12)))
    for split in ("train", "valid", "test", "test1"):
        for side, lang in (("src", "de"), ("tgt", "en")):
            lines = (raw / f"{split}.{side}").read_text().splitlines()
            (raw / f"{split}.{lang}").write_text("".join(" ".join(f"\u2581{w}" for w in line.split()) + "\n"
                                                         for line in lines))
    run_cli("fairseq-preprocess", "--source-lang", "de", "--target-lang", "en", "--trainpref", raw / "train",
            "--validpref", raw / "valid", "--testpref", f"{raw / 'test'},{raw / 'test1'}", "--joined-dictionary",
            "--destdir", root / "bin", "--workers", "1")
    gold = root / "gold"
    gold.mkdir()
    (gold / "alignment.talp").write_text("".join(
        " ".join(f"{int(i) + 1}-{int(j) + 1}" for i, j in (link.split("-") for link in line.split())) + "\n"
        for line in (raw / "test1.align").read_text().splitlines()))
    (gold / "newstest2014.raw.en").write_text((raw / "test.tgt").read_text())
    (gold / "rwth.tok.en").write_text((raw / "test1.tgt").read_text())
    return root / "bin", gold


def _pair_env(tmp_path, **extra):
    from tests.helpers import BIN

    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONWARNINGS": "ignore", "CPU": "1",
            "WORK": str(tmp_path / "work"), "NUM_WORKERS": "0", "MAX_UPDATE": "6", "UPDATE_FREQ": "2",
            "MAX_TOKENS": "300", "VALID_INTERVAL": "3", "LOG_INTERVAL": "1", "NEWSTEST_SHARDS": "3",
            "GEN_MAX_TOKENS": "100", "DEADLINE": "500", "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.e2e
def test_gpu_pair_cpu_mode_trains_evaluates_and_summarises(tmp_path):
    """gpu_pair.sh's CPU mode runs gpu_run.sh's whole path on a toy corpus: both models train a few updates of
    the batch plan, then the RWTH sweep, the RWTH and (a fixed third of) newstest2014 translations, and the
    summary, whose figures are checked against the files the run left."""
    bin_dir, gold = _toy_replication_data(tmp_path / "data")
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(EXAMPLE / "gpu_pair.sh"), str(bin_dir), str(gold), str(out), "120"],
                          capture_output=True, text=True, env=_pair_env(tmp_path), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    work = tmp_path / "work"
    rows = {r["model"]: r for r in json.loads((out / "results.json").read_text())}
    assert set(rows) == {"de-en-softmax", "de-en-rela-g"}
    assert (out / "results.md").read_text() == (work / "results.md").read_text() and (out / "curves.png").stat().st_size
    for name, r in rows.items():
        log = (work / name / "train.log").read_text()
        assert "'update_freq': [2]" in log and "'max_tokens': 300" in log and "'warmup_updates': 500" in log
        assert r["updates"] == 6 and [u for u, _ in r["valid_curve"]] == [3, 6]  # VALID_INTERVAL 3, to MAX_UPDATE
        assert r["crash"] is None and r["final_loss_scale"] is None  # fp32
        # newstest2014: shard 0 of 3, a fixed subset, the same for both models, named in the table
        hyps = _generated_plain(work / name / "gen-newstest2014.txt")
        assert 0 < len(hyps) < 45 and r["bleu_newstest2014_sentences"] == [len(hyps), 45]
        assert r["bleu_newstest2014"] is not None and r["bleu_rwth"] is not None
        assert r["bleu_rwth_sentences"] == [12, 12] and len(_generated_plain(work / name / "gen-rwth.txt")) == 12
        sweep = json.loads((work / name / "analysis" / "alignment.json").read_text())
        assert r["aer"]["best_layer"] == sweep["best_layer"] and set(r["cross_attention"]) == {"0", "1"}
    assert _generated_plain(work / "de-en-softmax" / "gen-newstest2014.txt").keys() == \
        _generated_plain(work / "de-en-rela-g" / "gen-newstest2014.txt").keys()
    assert f"({rows['de-en-softmax']['bleu_newstest2014_sentences'][0]}/45)" in (out / "results.md").read_text()
    assert rows["de-en-rela-g"]["cross_attention"]["0"]["sparsity_mean"] > 0  # ReLA: exact zeros
    assert rows["de-en-softmax"]["cross_attention"]["0"]["sparsity_mean"] == 0
    import tarfile

    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    assert "./de-en-rela-g/analysis/alignment.json" in names and "./results.md" in names
    assert not any(n.endswith(".pt") for n in names)
    assert "CPU mode" in (work / "gpu.txt").read_text()


def _generated_plain(path):
    """``{id: hypothesis}`` of a plain fairseq-generate output, read here without summarize.py."""
    return {int(line.split("\t")[0][2:]): line.rstrip("\n").split("\t")[2]
            for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("D-")}


@pytest.mark.e2e
def test_seeds_sh_runs_multi30k_sh_whole_path_with_extra_train_args(tmp_path):
    """seeds.sh on a toy corpus: one epoch of softmax at seed 2 through multi30k.sh (training, the beam-4
    translation of the test split, the analysis); TRAIN_ARGS reaches fairseq-train and overrides the recipe's
    options, the others stay; pieces.log has the piece's start and end; a rerun repeats no work."""
    bin_dir, _ = _toy_replication_data(tmp_path / "data")
    work = tmp_path / "seeds"
    env = {**os.environ, "MAX_EPOCH": "1", "TRAIN_ARGS": "--lr 0.0005 --warmup-updates 7"}

    def seeds():
        proc = subprocess.run(["bash", str(EXAMPLE / "seeds.sh"), str(bin_dir), str(work), "softmax:2"],
                              capture_output=True, text=True, env=env, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    seeds()
    model = work / "seed2" / "de-en-softmax"
    log = (model / "train.log").read_text()
    assert "lr=[0.0005]" in log and "warmup_updates=7" in log  # TRAIN_ARGS, after the recipe's 1e-3 and 400
    assert "seed=2" in log and "max_epoch=1" in log and "encoder_embed_dim=128" in log and "dropout=0.2" in log
    assert len(_generated_plain(model / "gen-test.txt")) == 45
    assert json.loads((model / "analysis" / "stats.json").read_text())
    times = (model / "times.txt").read_text()
    assert "train_seconds" in times and "decode_test_seconds" in times and "best_updates" in times
    from fairseq_rela.cli.malloc import find_library  # tcmalloc where installed (scripts/install.sh installs it)

    assert f"malloc {'tcmalloc' if find_library() else 'glibc'}" in times.split("\n")
    pieces = [line.split(" ", 1)[1].split(" (")[0] for line in (work / "pieces.log").read_text().splitlines()]
    assert pieces == ["start softmax seed 2", "done softmax seed 2"]
    translated = (model / "gen-test.txt").stat().st_mtime_ns
    seeds()  # the model is finished: nothing is trained or translated again
    assert (model / "train.log").read_text() == log and (model / "gen-test.txt").stat().st_mtime_ns == translated
    assert (work / "pieces.log").read_text().splitlines()[2:][0].split(" ", 1)[1] == \
        "skip softmax seed 2 (finished before)" and len((work / "pieces.log").read_text().splitlines()) == 3


@pytest.mark.e2e
def test_gpu_pair_refuses_bad_input_before_any_work(tmp_path):
    script = str(EXAMPLE / "gpu_pair.sh")
    bin_dir, gold = tmp_path / "bin", tmp_path / "gold"
    bin_dir.mkdir()
    gold.mkdir()
    for name in ("dict.de.txt", "dict.en.txt"):
        (bin_dir / name).write_text("")
    (gold / "alignment.talp").write_text("")
    cases = [
        ([], {}, "gpu_pair.sh: error: usage: gpu_pair.sh BIN GOLD_DIR OUT [SECONDS_OF_TRAINING]"),
        ([str(tmp_path), str(gold)], {}, f"gpu_pair.sh: error: {tmp_path}: no dict.de.txt and dict.en.txt "
                                         "(prepare.py's bin/ is needed)"),
        ([str(bin_dir), str(tmp_path)], {}, f"gpu_pair.sh: error: {tmp_path}: no alignment.talp (the RWTH gold)"),
        ([str(bin_dir), str(gold)], {"PRECISION": "--fp16"}, "gpu_run.sh: error: CPU=1 trains in fp32 only (PRECISION=--fp16)"),
        ([str(bin_dir), str(gold)], {"UPDATE_FREQ": "two"}, "gpu_run.sh: error: UPDATE_FREQ=two: a positive integer is needed"),
        ([str(bin_dir), str(gold)], {"DEADLINE": "100"}, "gpu_pair.sh: error: training time -95 s: give DEADLINE > "
                                                         "EVAL_RESERVE + 25 or SECONDS_OF_TRAINING"),
    ]
    for args, env, line in cases:
        out = tmp_path / "out"
        proc = subprocess.run(["bash", script, *args, *([str(out)] if args else [])], capture_output=True, text=True,
                              env={**_pair_env(tmp_path), **env})
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [line], proc.stderr
        assert not out.exists() and not (tmp_path / "work").exists()


def _descendants(pid):
    """Live (not zombie) descendants of ``pid``: {pid: command line}, read from /proc."""
    children = {}
    for stat in __import__("glob").glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            try:
                found[child] = open(f"/proc/{child}/cmdline").read().replace("\0", " ")
            except OSError:
                continue
            todo.append(child)
    return found


def _alive(pid) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.e2e
def test_gpu_pair_passes_a_signal_to_its_trainings(tmp_path):
    """SIGTERM to the run while both models train: every training process ends, and the run exits 143."""
    import signal
    import time

    bin_dir, gold = _toy_replication_data(tmp_path / "data")
    proc = subprocess.Popen(["bash", str(EXAMPLE / "gpu_pair.sh"), str(bin_dir), str(gold), str(tmp_path / "out"), "600"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_pair_env(tmp_path, MAX_UPDATE="100000"))
    try:
        deadline, trainings = time.time() + 300, {}
        while time.time() < deadline and len(trainings) < 2:
            time.sleep(1)
            tree = _descendants(proc.pid)
            trainings = {p: c for p, c in tree.items() if "fairseq-train" in c or "fairseq_cli.train" in c}
        assert len(trainings) == 2, tree
        time.sleep(3)
        everything = _descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 143
        left = list(everything)
        for _ in range(20):  # processes that got the signal may take a moment to exit
            left = [p for p in left if _alive(p)]
            if not left:
                break
            time.sleep(0.5)
        assert not left, {p: everything[p] for p in left}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.e2e
def test_summarize_without_plot_for_the_gpu_site(tmp_path):
    """--no-plot (the GPU site has no matplotlib): the tables, no curves.png."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(RUN_H200, run, ignore=shutil.ignore_patterns("curves.png", "results.*"))
    proc = subprocess.run([sys.executable, str(EXAMPLE / "summarize.py"), str(run), "--no-plot"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (run / "curves.png").exists() and "| de-en-rela-g |" in (run / "results.md").read_text()
    assert len(json.loads((run / "results.json").read_text())) == 7


# --- summarize_seeds.py (issue 35): seeds per variant at one recipe -------------------------------------

RUN_54 = EXAMPLE / "runs" / "2026-11-24-cpu-multi30k-54ep"  # seed 1 of softmax and ReLA-g, finished, no translations


def _seed_run(root, variant, seed, refs, drop, stats=(0.7, 0.1, 0.4), ppl=None):
    """A finished multi30k.sh model folder: the committed 54-epoch train.log under another seed (with ``ppl``,
    that validation perplexity in place of the committed best), translations that drop one word of every
    ``drop``-th sentence's reference, and an analysis."""
    folder = root / f"seed{seed}" / f"de-en-{variant}"
    (folder / "analysis").mkdir(parents=True)
    log = (RUN_54 / f"de-en-{variant}" / "train.log").read_text(encoding="utf-8")
    if ppl is not None:  # the validation at update 7155, the best checkpoint times.txt names below
        line = next(l for l in log.split("\n") if "valid on 'valid'" in l and "| num_updates 7155 |" in l)
        log = log.replace(line, re.sub(r"\| ppl [0-9.]+ \|", f"| ppl {ppl} |", line))
    (folder / "train.log").write_text(log.replace("'seed': 1,", f"'seed': {seed},").replace("seed=1,", f"seed={seed},"),
                                      encoding="utf-8")
    (folder / "times.txt").write_text("train_seconds 100\ndecode_test_seconds 9\nbest_updates 7155\n")
    (folder / "trained").write_text("")
    hyps = [" ".join(r.split()[1:]) if i % drop == 0 else r for i, r in enumerate(refs)]
    (folder / "gen-test.txt").write_text("".join(f"S-{i}\tx\nD-{i}\t-0.5\t{h}\n" for i, h in reversed(list(enumerate(hyps)))),
                                         encoding="utf-8")
    sparsity, null, jsd = stats
    (folder / "analysis" / "stats.json").write_text(json.dumps({"attention": {kind: {str(l): {
        "sparsity_mean": sparsity + 0.01 * l, "null_rate_mean": null, "head_jsd": jsd} for l in range(3)}
        for kind in ("cross", "encoder_self", "decoder_self")}}))
    (folder / "analysis" / "stats.txt").write_text(f"{variant} seed {seed}\n")
    return folder, hyps


def _refs(tmp_path, n=120):
    words = "a man in a red shirt is riding a bike down the busy street near two dogs".split()
    refs = [" ".join(words[(i % 7):(i % 7) + 5 + i % 6]) + f" number {i}." for i in range(n)]
    (tmp_path / "refs.en").write_text("".join(r + "\n" for r in refs), encoding="utf-8")
    return refs


@pytest.mark.e2e
def test_seed_summary_scores_every_seed_and_compares_over_seeds(tmp_path):
    """Two new seeds per variant and the committed run as seed 1: every committed hypothesis file rescored by
    sacrebleu's own command line, the spreads and Welch's interval against scipy's."""
    import numpy as np
    import sacrebleu
    from scipy import stats

    refs = _refs(tmp_path)
    work = tmp_path / "work"
    hyps = {}
    for variant, seed, drop, ppl in (("softmax", 2, 5, None), ("softmax", 3, 4, 4.91), ("rela-g", 2, 1, None),
                                     ("rela-g", 3, 2, 5.4)):
        hyps[variant, seed] = _seed_run(work, variant, seed, refs, drop, ppl=ppl)[1]
    out = tmp_path / "out"
    (work / "pieces.log").write_text("2026-12-07T03:00:00Z start softmax seed 2 (host vm, pid 7)\n"
                                     "2026-12-07T04:30:00Z stopped softmax seed 2\n"
                                     "2026-12-07T05:00:00Z start softmax seed 2 (host vm, pid 9)\n"
                                     "2026-12-07T05:00:30Z start rela-g seed 2 (host vm, pid 8)\n"
                                     "2026-12-07T07:15:00Z done softmax seed 2\n")
    proc = subprocess.run([sys.executable, str(EXAMPLE / "summarize_seeds.py"), work / "seed2", work / "seed3",
                           "--committed", RUN_54, "--refs", tmp_path / "refs.en", "--out", out, "--samples", "200",
                           "--shuffles", "300", "--pieces", work / "pieces.log"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "results.json").read_text())
    assert [(p["variant"], p["seed"], p["outcome"], p["seconds"]) for p in result["pieces"]] == [
        ("softmax", 2, "stopped", 5400), ("softmax", 2, "done", 8100), ("rela-g", 2, "no end logged", None)]
    assert "| softmax | 2 | 2026-12-07T05:00:00Z | 2026-12-07T07:15:00Z | done | 2.25 h |" in (out / "results.md").read_text()
    runs = {(r["variant"], r["seed"]): r for r in result["runs"]}
    assert sorted(runs) == [("rela-g", 1), ("rela-g", 2), ("rela-g", 3), ("softmax", 1), ("softmax", 2), ("softmax", 3)]
    committed = {r["variant"]: r for r in json.loads((RUN_54 / "results.json").read_text())}
    for (variant, seed), r in runs.items():
        folder = out / f"{variant}-seed{seed}"
        assert (folder / "train.log").is_file() and (folder / "stats.txt").is_file()
        if seed == 1:  # the committed run: its own BLEU, no translations to rescore
            assert r["source"] == "committed" and r["hypotheses"] is None and r["chrf"] is None
            assert r["bleu"] == committed[variant]["bleu"] and r["valid_ppl"] == committed[variant]["valid_ppl_best"]
            assert not (folder / "test2016.hyp.en").exists()
            continue
        assert (folder / "test2016.hyp.en").read_text(encoding="utf-8").split("\n")[:-1] == hyps[variant, seed]
        cli = subprocess.run([sys.executable, "-m", "sacrebleu", str(tmp_path / "refs.en"), "-i",
                              str(out / r["hypotheses"]), "-m", "bleu", "chrf", "-b", "-w", "2"],
                             capture_output=True, text=True, check=True).stdout
        assert [float(x) for x in cli.replace("[", "").replace("]", "").replace(",", " ").split()] == [r["bleu"], r["chrf"]]
        assert r["best_updates"] == 7155 and r["epochs"] == 54 and r["stopped"] == "max epoch"
        if variant == "rela-g":  # paired bootstrap against softmax of the same seed: far worse here
            assert r["bleu_p_vs_softmax"] < 0.05 and r["bleu_ci95_vs_softmax"] > 0
    bleu = {v: [runs[v, s]["bleu"] for s in (1, 2, 3)] for v in ("softmax", "rela-g")}
    for v in bleu:
        spread = result["variants"][v]["bleu"]
        assert abs(spread["mean"] - np.mean(bleu[v])) < 1e-9 and abs(spread["sd"] - np.std(bleu[v], ddof=1)) < 1e-9
    welch = result["comparisons"]["rela-g - softmax"]["welch_bleu"]
    ref = stats.ttest_ind(bleu["rela-g"], bleu["softmax"], equal_var=False)
    assert abs(welch["low"] - ref.confidence_interval().low) < 1e-6 and abs(welch["df"] - ref.df) < 1e-9
    assert abs(welch["high"] - ref.confidence_interval().high) < 1e-6
    ppl = {v: [runs[v, s]["valid_ppl"] for s in (1, 2, 3)] for v in ("softmax", "rela-g")}
    assert ppl["softmax"][2] == 4.91 and ppl["rela-g"][2] == 5.4 and ppl["rela-g"][:2] == [5.28, 5.29]
    welch = result["comparisons"]["rela-g - softmax"]["welch_valid_ppl"]
    ref = stats.ttest_ind(ppl["rela-g"], ppl["softmax"], equal_var=False)
    assert abs(welch["low"] - ref.confidence_interval().low) < 1e-6 and abs(welch["df"] - ref.df) < 1e-9
    assert welch["seeds"] == [[1, 2, 3], [1, 2, 3]] and "| rela-g - softmax |" in (out / "results.md").read_text()
    curve = runs["rela-g", 3]["valid_curve"]  # every validation of the log, the changed one included
    assert len(curve) == 54 and [7155, 5.4] in curve and runs["rela-g", 1]["valid_curve"][-1] == [7290, 5.28]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    boot = result["comparisons"]["rela-g - softmax"]["bootstrap_bleu"]  # seeds with translations only
    assert boot["seeds"] == [[2, 3], [2, 3]]
    mean_gap = np.mean([runs["rela-g", s]["bleu"] for s in (2, 3)]) - np.mean([runs["softmax", s]["bleu"] for s in (2, 3)])
    assert abs(boot["difference"] - mean_gap) < 0.01 and boot["low"] <= boot["difference"] <= boot["high"]
    assert 0 < result["comparisons"]["rela-g - softmax"]["stratified_p_bleu"] < 0.05
    att = result["variants"]["rela-g"]["attention"]["cross.sparsity"]  # seeds 2, 3: 0.71 each; seed 1: committed
    assert att["n"] == 3 and abs(att["mean"] - (0.71 * 2 + 0.742) / 3) < 2e-3
    signature = f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    assert result["bleu_signature"] == signature and signature in (out / "results.md").read_text()


def test_seed_pieces_take_their_epochs_and_a_lower_bound_from_train_log(tmp_path):
    """A piece killed without its end line is timed to its model's last train.log line before the next
    start (a lower bound); each piece gets the epochs it finished; a skip line is no piece; a start whose
    model has no train.log keeps no epochs."""
    from summarize_seeds import markdown, read_pieces

    model = tmp_path / "seed2" / "de-en-softmax"
    model.mkdir(parents=True)
    line = "2026-12-07 {} | INFO | fairseq_cli.train | end of epoch {} (average epoch stats below)\n"
    (model / "train.log").write_text("2026-12-07 12:28:00 | INFO | fairseq_cli.train | Namespace(seed=2)\n"
                                     + line.format("12:31:00", 1) + line.format("15:11:50", 28)
                                     + "2026-12-07 15:14:23 | INFO | train_inner | epoch 029:     50 / 135\n"
                                     + "2026-12-07 15:41:00 | INFO | fairseq.trainer | Loaded checkpoint\n"
                                     + line.format("15:44:00", 29) + line.format("17:02:30", 54))
    (tmp_path / "pieces.log").write_text("2026-12-07T12:27:45Z start softmax seed 2 (host vm, pid 1)\n"
                                         "2026-12-07T15:40:33Z start softmax seed 2 (host vm, pid 2)\n"
                                         "2026-12-07T15:40:34Z start rela-g seed 2 (host vm, pid 3)\n"
                                         "2026-12-07T17:03:16Z done softmax seed 2\n"
                                         "2026-12-07T18:53:19Z skip softmax seed 2 (finished before)\n")
    rows = read_pieces([tmp_path / "pieces.log"])
    assert [(r["variant"], r["outcome"], r["seconds"], r["epochs"], r["last_log"], r["seconds_at_least"])
            for r in rows] == [
        ("softmax", "no end logged", None, [1, 28], "2026-12-07T15:14:23Z", 9998),
        ("softmax", "done", 4963, [29, 54], None, None),
        ("rela-g", "no end logged", None, None, None, None)]
    table = markdown([], {"variants": {}, "comparisons": {}, "pieces": rows, "bleu_signature": "b",
                          "chrf_signature": "c"}, 10, 10)
    assert "| softmax | 2 | 2026-12-07T12:27:45Z | — | no end logged | ≥ 2.78 h (to 15:14:23Z) | 1–28 |" in table
    assert "| softmax | 2 | 2026-12-07T15:40:33Z | 2026-12-07T17:03:16Z | done | 1.38 h | 29–54 |" in table
    assert "| rela-g | 2 | 2026-12-07T15:40:34Z | — | no end logged | — | — |" in table


@pytest.mark.e2e
def test_seed_summary_refuses_bad_input_in_one_line(tmp_path):
    refs = _refs(tmp_path, n=30)
    script = [sys.executable, str(EXAMPLE / "summarize_seeds.py")]

    def refused(*runs, extra=()):
        out = tmp_path / "out"
        proc = subprocess.run(script + [str(r) for r in runs] + ["--refs", str(tmp_path / "refs.en"), "--out", str(out),
                                                                 *extra], capture_output=True, text=True)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr and not out.exists(), proc.stderr
        (line,) = proc.stderr.strip().split("\n")
        assert line.startswith("summarize_seeds.py: error: ")
        return line

    soft, _ = _seed_run(tmp_path / "w", "softmax", 2, refs, 3)
    rela, _ = _seed_run(tmp_path / "w", "rela-g", 2, refs, 2)
    (tmp_path / "w" / "seed2" / "copy").mkdir()
    (tmp_path / "w" / "seed2" / "copy" / "de-en-rela-g").symlink_to(rela)
    assert "rela-g seed 2 listed twice" in refused(soft, rela, tmp_path / "w" / "seed2" / "copy")
    assert "no softmax run" in refused(rela)
    (rela / "gen-test.txt").rename(rela / "kept")
    assert "missing gen-test.txt" in refused(soft, rela)
    (rela / "kept").write_text("".join(f"D-{i}\t-1\t{r}\n" for i, r in enumerate(refs[:-1])))  # one sentence short
    (rela / "kept").rename(rela / "gen-test.txt")
    assert "29 translations (ids 0..28) for 30 references" in refused(soft, rela)
    (rela / "gen-test.txt").write_text("".join(f"D-{i}\t-1\t{r}\n" for i, r in enumerate(refs)))
    (rela / "trained").unlink()
    assert "training not finished" in refused(soft, rela)
    (rela / "trained").write_text("")
    log = (rela / "train.log").read_text()
    (rela / "train.log").write_text(log.replace("'max_epoch': 54,", "'max_epoch': 1,").replace("max_epoch=54,", "max_epoch=1,"))
    assert "not the recipe of" in refused(soft, rela) and "max_epoch=1" in refused(soft, rela)
    (rela / "train.log").write_text(log.replace("dropout=0.2,", "dropout=0.3,"))
    assert "dropout=0.3" in refused(soft, rela)
    (rela / "train.log").write_text(log + log.replace("'seed': 2,", "'seed': 5,").replace("seed=2,", "seed=5,"))
    assert "its pieces trained with seeds 2, 5" in refused(soft, rela)  # resumed under another SEED
    (rela / "train.log").write_text(log)
    assert "--committed" in refused(soft, rela, extra=["--committed", str(tmp_path)])
    (tmp_path / "results.json").write_text(json.dumps({"runs": []}))  # summarize_seeds.py's, not a committed run's
    assert "not summarize_multi30k.py's list" in refused(soft, rela, extra=["--committed", str(tmp_path)])
    stats = (rela / "analysis" / "stats.json").read_text()
    (rela / "analysis" / "stats.json").write_text("{}")
    assert "no attention statistics" in refused(soft, rela)
    (rela / "analysis" / "stats.json").write_text(stats)
    assert "--refs" in refused(soft, rela, extra=["--refs", str(tmp_path / "none.gz")])
    (tmp_path / "pieces.log").write_text("2026-12-07T03:00:00Z begin softmax seed 2\n")
    assert "pieces.log:1: not a seeds.sh line" in refused(soft, rela, extra=["--pieces", str(tmp_path / "pieces.log")])


@pytest.mark.e2e
def test_seed_summary_grows_from_its_own_folder_and_checks_what_it_reads(tmp_path):
    """Seed 3 added to a summary of seed 2 (``--summary`` into the same folder) gives the summary of both at
    once, pieces included; a hypothesis file changed since, or cut short, is refused in one line."""
    refs = _refs(tmp_path, n=60)
    work = tmp_path / "work"
    for variant, seed, drop in (("softmax", 2, 5), ("softmax", 3, 4), ("rela-g", 2, 1), ("rela-g", 3, 2)):
        _seed_run(work, variant, seed, refs, drop)
    (tmp_path / "p2.log").write_text("2026-12-07T03:00:00Z start softmax seed 2 (host vm, pid 7)\n"
                                     "2026-12-07T04:30:00Z done softmax seed 2\n")
    (tmp_path / "p3.log").write_text("2026-12-08T03:00:00Z start rela-g seed 3 (host vm, pid 8)\n")
    script = [sys.executable, str(EXAMPLE / "summarize_seeds.py"), "--refs", str(tmp_path / "refs.en"),
              "--samples", "100", "--shuffles", "100"]

    def summarize(*args, ok=True):
        proc = subprocess.run(script + [str(a) for a in args], capture_output=True, text=True)
        if ok:
            assert proc.returncode == 0, proc.stderr
            return proc
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        (line,) = proc.stderr.strip().split("\n")
        assert line.startswith("summarize_seeds.py: error: ")
        return line

    summarize(work / "seed2", work / "seed3", "--committed", RUN_54, "--pieces", tmp_path / "p2.log",
              tmp_path / "p3.log", "--out", tmp_path / "once")
    grown = tmp_path / "grown"
    summarize(work / "seed2", "--committed", RUN_54, "--pieces", tmp_path / "p2.log", "--out", grown)
    assert "seeds 2, 3" not in (grown / "results.md").read_text()
    summarize(work / "seed3", "--summary", grown, "--pieces", tmp_path / "p2.log", tmp_path / "p3.log", "--out", grown)
    once, both = (json.loads((d / "results.json").read_text()) for d in (tmp_path / "once", grown))
    assert both == once and len(both["runs"]) == 6 and len(both["pieces"]) == 2
    assert (grown / "results.md").read_text() == (tmp_path / "once" / "results.md").read_text()
    assert "seed 3 listed twice" in summarize(work / "seed3", "--summary", grown, "--out", tmp_path / "x", ok=False)
    rebuilt = tmp_path / "rebuilt"  # from the folder alone (the work folders gone)
    for model in work.glob("seed*/de-en-*"):
        for f in model.iterdir():
            if f.is_file():
                f.unlink()
    summarize("--summary", grown, "--out", rebuilt)
    assert json.loads((rebuilt / "results.json").read_text()) == once
    hyp = grown / "rela-g-seed3" / "test2016.hyp.en"
    lines = hyp.read_text(encoding="utf-8").split("\n")
    hyp.write_text("\n".join([refs[0]] + lines[1:]), encoding="utf-8")  # first sentence changed since
    assert "scores BLEU" in summarize("--summary", grown, "--out", tmp_path / "x", ok=False)
    hyp.write_text("\n".join(lines[1:]), encoding="utf-8")  # one line short
    assert "59 lines for 60 references" in summarize("--summary", grown, "--out", tmp_path / "x", ok=False)
    hyp.write_text("\n".join(lines), encoding="utf-8")
    times = grown / "softmax-seed2" / "times.txt"
    kept = times.read_text()
    times.write_text(kept.replace("best_updates 7155", "best_updates 7020"))  # the record no longer matches
    assert "give other best_updates, valid_ppl than results.json records" in \
        summarize("--summary", grown, "--out", tmp_path / "x", ok=False)
    times.write_text(kept)
    record = json.loads((grown / "results.json").read_text())
    for change, says in ((lambda r: r["runs"][0].update(hypotheses="rela-g-seed2/test2016.hyp.en"), "not softmax-seed"),
                         (lambda r: r["runs"][0].update(seed="1"), "an integer seed"),
                         (lambda r: r["pieces"][0].pop("start"), "'pieces' with")):
        bad = json.loads(json.dumps(record))
        change(bad)
        (grown / "results.json").write_text(json.dumps(bad))
        assert says in summarize("--summary", grown, "--out", tmp_path / "x", ok=False)
    (grown / "results.json").write_text(json.dumps(record))
    assert "no runs" in summarize("--out", tmp_path / "x", ok=False)
    assert "not summarize_seeds.py's" in summarize("--summary", RUN_54, "--out", tmp_path / "x", ok=False)
    assert not (tmp_path / "x").exists()


@pytest.mark.e2e
@pytest.mark.realdata
def test_the_committed_seed_summary_rebuilds_from_the_repository_alone(tmp_path):
    """summarize_seeds.py --summary on the committed seeds folder, with ../shared/data's references, gives its
    results.json again: every BLEU, chrF, interval and p-value from the committed hypotheses."""
    run = EXAMPLE / "runs" / "2026-12-07-cpu-multi30k-seeds"
    proc = subprocess.run([sys.executable, str(EXAMPLE / "summarize_seeds.py"), "--summary", str(run),
                           "--refs", str(SHARED_DATA / "multi30k" / "test_2016_flickr.en.gz"), "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads((run / "results.json").read_text())
    assert (tmp_path / "results.md").read_text() == (run / "results.md").read_text()


@pytest.mark.e2e
@pytest.mark.realdata
def test_committed_hypotheses_rescore_with_sacrebleu_against_the_shared_references(tmp_path):
    """Every committed Multi30k hypothesis file gives its results.json BLEU with sacrebleu's own command line
    against ../shared/data's test2016 references (the seed runs' test2016.hyp.en, the 28-epoch run's
    gen-test.txt.gz)."""
    with gzip.open(SHARED_DATA / "multi30k" / "test_2016_flickr.en.gz", "rt", encoding="utf-8") as f:
        (tmp_path / "ref.en").write_text(f.read(), encoding="utf-8")
    checked = []
    for results in sorted((EXAMPLE / "runs").glob("*-cpu-multi30k*/results.json")):
        run, rows = results.parent, json.loads(results.read_text())
        for row in rows["runs"] if isinstance(rows, dict) else rows:
            if isinstance(rows, dict):  # summarize_seeds.py's folder: the file results.json names
                if row["hypotheses"] is None:
                    continue
                path = run / row["hypotheses"]
                lines = path.read_text(encoding="utf-8").split("\n")[:-1]
            else:  # summarize_multi30k.py's: fairseq-generate's output, where kept
                path = run / f"de-en-{row['variant']}" / "gen-test.txt.gz"
                if not path.is_file():
                    continue
                with gzip.open(path, "rt", encoding="utf-8") as f:
                    found = {int(l.split("\t")[0][2:]): l.rstrip("\n").split("\t")[2] for l in f if l.startswith("D-")}
                lines = [found[i] for i in range(len(found))]
            (tmp_path / "hyp.en").write_text("".join(l + "\n" for l in lines), encoding="utf-8")
            score = subprocess.run([sys.executable, "-m", "sacrebleu", str(tmp_path / "ref.en"), "-i",
                                    str(tmp_path / "hyp.en"), "-m", "bleu", "-b", "-w", "2"],
                                   capture_output=True, text=True, check=True).stdout
            assert len(lines) == 1000 and abs(float(score) - row["bleu"]) < 0.006, (path, score, row["bleu"])
            checked.append(path)
    assert len(checked) >= 2, checked


@pytest.mark.unit
def test_compare_logs_finds_a_rerun_identical_and_another_variant_not(tmp_path, capsys):
    """compare_logs.py on real logs: the 2026-12-05 retraining of seed 1 (10 epochs) against the 54-epoch run,
    timings aside; a changed value, a missing line and a missing epoch each show."""
    from compare_logs import main

    retrained = EXAMPLE / "runs" / "2026-12-05-cpu-contributions" / "m30k-softmax" / "train.log"
    committed = RUN_54 / "de-en-softmax" / "train.log"
    epochs = ["--epochs"] + [str(e) for e in range(1, 11)]
    assert main([str(committed), str(retrained)] + epochs) == 0
    assert capsys.readouterr().out.strip().endswith("47 lines in both, 0 in one only, 0 values differ: identical")
    assert main([str(committed), str(RUN_54 / "de-en-rela-g" / "train.log"), "--epochs", "1"]) == 1
    assert capsys.readouterr().out.strip().endswith(": differ")
    text = retrained.read_text(encoding="utf-8")
    line = next(l for l in text.split("\n") if "| train_inner | epoch 004" in l)
    slower = line.replace("wps=", "wps=1").replace("wall=", "wall=9")  # timings only
    (tmp_path / "slow.log").write_text(text.replace(line, slower), encoding="utf-8")
    assert main([str(committed), str(tmp_path / "slow.log")] + epochs) == 0
    capsys.readouterr()
    gnorm = line.split("gnorm=")[1].split(",")[0]
    (tmp_path / "other.log").write_text(text.replace(line, line.replace(f"gnorm={gnorm}", "gnorm=9.999")), encoding="utf-8")
    assert main([str(committed), str(tmp_path / "other.log")] + epochs) == 1
    assert f"gnorm {gnorm} vs 9.999" in capsys.readouterr().out
    assert main([str(committed), str(retrained), "--epochs", "10", "11"]) == 1  # the retraining stopped at 10
    assert "agree so far (4 lines in one log only)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no logged line of epoch 60"):
        main([str(committed), str(retrained), "--epochs", "60"])
