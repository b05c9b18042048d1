"""The alignment sweep (analysis/sweep.py) of fairseq-rela-analyze agrees with fairseq-generate's alignments,
and the RWTH example's summarize.py reads what it wrote."""
import json
import shutil
import subprocess
import sys

import pytest
from fairseq import checkpoint_utils

from fairseq_rela.alignment.aer import AERResult, Gold, alignment_error_rate, read_gold, read_hypothesis
from fairseq_rela.analysis.sweep import SweepConfig, SweepResult
from tests.helpers import REPO, USER_DIR, generate_alignments, run_cli


#: every per-layer alignment source of the sweep
SOURCES = ("weights", "norms", "block", "alti", "rollout-weights", "rollout-norms", "rollout-block", "rollout-alti")


def _analyze(toy_data, ckpt, out, *args):
    run_cli("fairseq-rela-analyze", toy_data / "bin", "--path", ckpt, "--gen-subset", "test", "--user-dir", USER_DIR,
            "--output-dir", out, "--cpu", "--no-plots", *args)


@pytest.fixture(scope="module")
def swept(toy_data, trained, tmp_path_factory):
    """One sweep with --write-links: (checkpoint, analysis folder, alignment.json)."""
    ckpt, out = trained("rela"), tmp_path_factory.mktemp("swept") / "analysis"
    _analyze(toy_data, ckpt, out, "--gold-alignment", toy_data / "test.align", "--gold-base", "0", "--write-links")
    return ckpt, out, json.loads((out / "alignment.json").read_text())


@pytest.mark.e2e
def test_sweep_agrees_with_generate(toy_data, swept, tmp_path):
    ckpt, analysis, sweep = swept
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    for f in ("alignment.json", "stats.json"):
        shutil.copy(analysis / f, tmp_path / f)
    gold = read_gold(str(toy_data / "test.align"), base=0)
    for source, shift, layer in (("norms", "AWI", 0), ("weights", "AWO", 1), ("block", "AWI", 1), ("alti", "AWO", 1)):
        out = generate_alignments(toy_data, ckpt, "--score-reference", "--alignment-source", source, "--alignment-layer",
                        str(layer), *(["--alignment-shift"] if shift == "AWI" else []))
        (tmp_path / "gen").write_text(out)
        aer = alignment_error_rate(gold, read_hypothesis(str(tmp_path / "gen"))).aer
        assert sweep["per_layer"][f"{source}-{shift}"][str(layer)] == pytest.approx(aer)
    assert set(sweep["per_layer"]) == {f"{s}-{sh}" for s in SOURCES for sh in ("AWO", "AWI")}
    assert len(sweep["per_head"]) == 2 * 2 * 2 * 4  # layers x sources (weights, norms: the block is per layer) x shifts x heads
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["num_updates"] == checkpoint_utils.load_checkpoint_to_cpu(str(ckpt))["optimizer_history"][-1]["num_updates"]
    _summarize_example(tmp_path, sweep, stats["num_updates"])


def _summarize_example(analysis, sweep, updates):
    """The RWTH example's summarize.py reads what fairseq-rela-analyze wrote (one row per model)."""
    work = analysis / "work"
    for name in (f"rela@{updates}", "softmax"):
        d = work / f"analysis-{name}"
        d.mkdir(parents=True)
        for f in ("alignment.json", "stats.json"):
            shutil.copy(analysis / f, d / f)
    subprocess.run([sys.executable, str(REPO / "examples" / "rwth_alignment" / "summarize.py"), str(work)],
                   check=True, capture_output=True)
    rows = [line.split(" | ") for line in (work / "results.md").read_text().splitlines() if line.startswith("| rela ")]
    assert len(rows) == 1 and rows[0][1] == str(updates)
    assert rows[0][3].endswith(f"({100 * sweep['best_layer']['aer']:.1f})")
    _check_aer_figure(work / "aer_by_layer.png", n_variants=2)


def _check_aer_figure(path, n_variants):
    """summarize.py's figure, decoded: two panels side by side (11 x 4.2 in), each variant's curves drawn in
    its matplotlib colour (C0, C1, ...), and no other curve colour."""
    import matplotlib.colors
    import matplotlib.image
    import numpy as np

    rgb = matplotlib.image.imread(str(path))[..., :3]
    height, width = rgb.shape[:2]
    assert 300 < height < 600 and 2.0 < width / height < 3.2, rgb.shape
    def drawn(colour):
        return int((np.abs(rgb - np.array(matplotlib.colors.to_rgb(colour))).max(-1) < 0.02).sum())
    assert all(drawn(f"C{i}") > 50 for i in range(n_variants)), [drawn(f"C{i}") for i in range(n_variants)]
    assert drawn(f"C{n_variants}") == 0


@pytest.mark.e2e
def test_written_links_score_the_sweep_with_or_without_gold(toy_data, swept, tmp_path):
    """Each links/ file, read back by the scorer, gives the sweep's per-layer AER (links written,
    then scored on an independent path); without --gold-alignment the same files are written."""
    ckpt, analysis, sweep = swept
    gold = read_gold(str(toy_data / "test.align"), base=0)
    files = sorted((analysis / "links").glob("*.txt"))
    assert len(files) == len(SOURCES) * 2 * 2  # sources x shifts x layers
    for f in files:
        source, shift, layer = f.stem.rsplit("-", 2)
        hyp = read_hypothesis(str(f))
        # a rolled-out source may put every row's maximum on </s> (no link) at a layer: only per-layer ones must link
        assert len(hyp) == len(gold) and (any(hyp) or source.startswith("rollout-"))
        assert sweep["per_layer"][f"{source}-{shift}"][layer[1:]] == pytest.approx(alignment_error_rate(gold, hyp).aer)
    _analyze(toy_data, ckpt, tmp_path / "plain", "--write-links")
    assert not (tmp_path / "plain" / "alignment.json").exists()
    assert {f.name: f.read_text() for f in (tmp_path / "plain" / "links").iterdir()} == \
        {f.name: f.read_text() for f in files}


def _bidirectional(*args):
    return subprocess.run([sys.executable, str(REPO / "examples" / "rwth_alignment" / "bidirectional.py"),
                           *map(str, args)], capture_output=True, text=True)


@pytest.mark.e2e
def test_bidirectional_symmetrises_like_the_command_line_tools(toy_data, swept, tmp_path):
    """examples/rwth_alignment/bidirectional.py: a backward model that is the forward one mirrored
    changes nothing; a different backward model gives what fairseq-rela-symmetrize + fairseq-rela-aer
    give for the same two files."""
    _, analysis, sweep = swept
    gold = toy_data / "test.align"
    files = sorted((analysis / "links").glob("*.txt"))
    mirror, other = tmp_path / "mirror", tmp_path / "other"
    for folder in (mirror, other):
        (folder / "links").mkdir(parents=True)
    for i, f in enumerate(files):  # target-source lines: what a model of the other direction writes
        (mirror / "links" / f.name).write_text(_reverse(f.read_text()))
        (other / "links" / f.name).write_text(_reverse(files[(i + 5) % len(files)].read_text()))
    proc = _bidirectional(analysis, mirror, "--gold", gold, "--gold-base", "0", "--out", tmp_path / "same")
    assert proc.returncode == 0, proc.stderr
    same = json.loads((tmp_path / "same" / "bidirectional.json").read_text())
    assert len(same["configs"]) == len(files)
    for name, row in same["configs"].items():
        source, shift, layer = name.rsplit("-", 2)
        for method in ("forward", "backward", "intersection", "grow-diag", "grow-diag-final-and", "union"):
            assert row[method]["aer"] == pytest.approx(sweep["per_layer"][f"{source}-{shift}"][layer[1:]])
    assert _bidirectional(analysis, other, "--gold", gold, "--gold-base", "0", "--out", tmp_path / "mixed").returncode == 0
    mixed = json.loads((tmp_path / "mixed" / "bidirectional.json").read_text())
    name = files[0].stem
    run_cli("fairseq-rela-symmetrize", "--forward", analysis / "links" / files[0].name,
            "--backward", other / "links" / files[0].name, "--output", tmp_path / "sym.txt")
    by_cli = json.loads(run_cli("fairseq-rela-aer", "--gold", gold, "--gold-base", "0", "--hyp", tmp_path / "sym.txt",
                                "--json").stdout)
    assert mixed["configs"][name]["grow-diag-final-and"]["aer"] == pytest.approx(by_cli["aer"])
    assert mixed["configs"][name]["grow-diag-final-and"]["aer"] != mixed["configs"][name]["forward"]["aer"]
    pair = mixed["best_pair"]
    assert pair["forward_config"] == min(mixed["configs"], key=lambda c: mixed["configs"][c]["forward"]["aer"])
    assert pair["backward_config"] == min(mixed["configs"], key=lambda c: mixed["configs"][c]["backward"]["aer"])
    assert (tmp_path / "mixed" / "bidirectional.md").read_text().startswith("| configuration")
    # the RWTH example's summary reads it: one row, the best configuration and the paired ones named
    work = tmp_path / "work"
    (work / "analysis-rela").mkdir(parents=True)
    for f in ("alignment.json", "stats.json"):
        shutil.copy(analysis / f, work / "analysis-rela" / f)
    shutil.copytree(tmp_path / "mixed", work / "bidirectional-rela")
    subprocess.run([sys.executable, str(REPO / "examples" / "rwth_alignment" / "summarize.py"), str(work)],
                   check=True, capture_output=True)
    rows = [line.split(" | ") for line in (work / "results.md").read_text().splitlines() if line.startswith("| rela | ")]
    best = mixed["best_symmetrised"]
    assert rows[-1][1:3] == [best, f"{100 * mixed['configs'][best]['forward']['aer']:.1f}"]
    assert rows[-1][5] == f"{pair['forward_config']} + {pair['backward_config']}"


@pytest.mark.e2e
def test_bidirectional_without_links_is_one_line(toy_data, swept, tmp_path):
    _, analysis, _ = swept
    proc = _bidirectional(analysis, tmp_path, "--gold", toy_data / "test.align", "--gold-base", "0")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"bidirectional.py: error: {tmp_path}: no links/SOURCE-SHIFT-L<layer>.txt "
                                                "(run fairseq-rela-analyze with --write-links)"]


@pytest.mark.e2e
def test_bidirectional_trains_eflomal_beside_the_attention(toy_data, swept, tmp_path):
    """--eflomal-train/--eflomal-test/--langs: eflomal on the same text, scored against the same gold (the
    toy task is one-to-one, so a working aligner is nearly perfect); bad eflomal input is one line."""
    _, analysis, _ = swept
    gold = toy_data / "test.align"
    mirror = tmp_path / "mirror" / "links"
    mirror.mkdir(parents=True)
    for f in (analysis / "links").glob("*.txt"):
        (mirror / f.name).write_text(_reverse(f.read_text()))
    common = ("--gold", gold, "--gold-base", "0")
    proc = _bidirectional(analysis, mirror.parent, *common, "--out", tmp_path / "out", "--eflomal-train",
                          toy_data / "train", "--eflomal-test", toy_data / "test", "--langs", "src", "tgt")
    assert proc.returncode == 0, proc.stderr
    baselines = json.loads((tmp_path / "out" / "bidirectional.json").read_text())["baselines"]
    assert sorted(baselines) == ["eflomal-fwd", "eflomal-gdfa", "eflomal-rev"]
    assert baselines["eflomal-gdfa"]["aer"] < 0.1 and baselines["eflomal-gdfa"]["recall"] > 0.9
    assert f"- eflomal-gdfa: AER {100 * baselines['eflomal-gdfa']['aer']:.1f}" in (tmp_path / "out" / "bidirectional.md").read_text()
    for args, message in (
            (("--eflomal-train", toy_data / "train"), "--eflomal-train, --eflomal-test and --langs go together"),
            (("--eflomal-train", toy_data / "train", "--eflomal-test", toy_data / "valid", "--langs", "src", "tgt"),
             f"{toy_data / 'valid'}.src: 60 sentences, but the gold alignment has 41")):
        proc = _bidirectional(analysis, mirror.parent, *common, *args)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines() == [f"bidirectional.py: error: {message}"]


def _reverse(text: str) -> str:
    return "".join(" ".join("-".join(link.split("-")[::-1]) for link in line.split()) + "\n"
                   for line in text.splitlines())


@pytest.mark.unit
def test_sweep_text_names_layers_and_heads_and_explains_near_100_awi():
    """alignment.txt spells out the best layer and head (0-based, with their ordinal and count), has a legend,
    and says why AWI is near 100% where it is; alignment.json keeps "config" and adds source/shift/layer/head."""
    def r(aer, links=10):
        return AERResult(aer=aer, precision=1 - aer, recall=1 - aer, hyp_links=links, sure_links=20, possible_links=20,
                         sentences=2)
    results = {SweepConfig(s, sh, l): r(0.3 + 0.1 * l if sh == "AWO" else (0.95 if l == 0 else 0.5))
               for s in ("weights", "norms") for sh in ("AWO", "AWI") for l in (0, 1, 2)}
    results.update({SweepConfig("weights", "AWO", l, h): r(0.9 - 0.01 * h - 0.1 * l) for l in (0, 1, 2) for h in range(4)})
    out = SweepResult("gold", 2, ("none", "none", "sum_mean"), results).to_json()
    assert out["best_layer"]["config"] == "norms-AWO-0" and out["best_layer"]["layer"] == 0
    assert out["best_head"]["config"] == "weights-AWO-2-3" and (out["best_head"]["layer"], out["best_head"]["head"]) == (2, 3)
    text = SweepResult("gold", 2, ("none", "none", "sum_mean"), results).format()
    assert "best layer: norms-AWO, layer 0 (the 1st of 3)" in text
    assert "best head:  weights-AWO, layer 2 (the 3rd of 3), head 3 (the 4th of 4)" in text
    assert "note: AWI is near 100% AER at layer 0 (weights 95.0, norms 95.0)" in text
    assert "layer 1 (" not in text.split("note:")[1].split("\n")[0]  # 50%: not near 100
    assert "layer, head: counted from 0" in text and "AWI: from the row that reads it as input" in text
    for source in ("weights:", "norms:"):
        assert f"\n  {source}" in text
    assert "\n  block:" not in text  # no block column, no block legend
    results = {c: (r(0.5) if c.shift == "AWI" else v) for c, v in results.items()}
    assert "note:" not in SweepResult("gold", 2, ("none", "none", "sum_mean"), results).format()


@pytest.mark.unit
def test_sweep_scores_alti_and_the_rolled_out_sources_per_layer(toy_data):
    """Per decoder layer: alti (the record's ALTI shares) and rollout-weights/-norms/-block/-alti (ALTI+'s source
    columns) beside weights/norms/block; per head only weights and norms; links from the same matrices."""
    import numpy as np
    import torch

    from fairseq_rela.alignment.links import align
    from fairseq_rela.analysis.sweep import LinkSweep, format_sweep
    from fairseq_rela.contributions import sentence_contributions
    from fairseq_rela.recording import AttentionRecorder, split_sentences
    from tests.helpers import batch, build

    task, model = build(toy_data, "--attention-activation", "rela")
    sample = batch(task, 4)
    rec = AttentionRecorder(model, block=True)
    with torch.no_grad(), rec:
        model(**sample["net_input"])
    sweep = LinkSweep("none", "none")
    sents = list(split_sentences(sample, rec, task.source_dictionary, task.target_dictionary))
    for sent in sents:
        sweep.update(sent)
    layer_level = {(c.source, c.shift, c.layer) for c in sweep.hyps if c.head is None}
    sources = ("weights", "norms", "block", "alti", "rollout-weights", "rollout-norms", "rollout-block", "rollout-alti")
    assert layer_level == {(s, sh, l) for s in sources for sh in ("AWO", "AWI") for l in (0, 1)}
    assert {c.source for c in sweep.hyps if c.head is not None} == {"weights", "norms"}
    for sent in sents:
        S = len(sent.src)
        for source, matrix in (("alti", sent.records[("cross", 1)].alti),
                               ("rollout-alti", sentence_contributions(sent.records, "alti").decoder[1][:, :S]),
                               ("rollout-block", sentence_contributions(sent.records, "block").decoder[1][:, :S])):
            links, _ = align(np.asarray(matrix), sent.src, sent.tgt_out[:-1], True, "none", "none", "sum_mean")
            assert sweep.hyps[SweepConfig(source, "AWI", 1)][sent.id] == set(links), source
    # the text: one table per kind of source, each column legended
    gold = [Gold(sure={(0, 0)}, possible={(0, 0)}) for _ in sents]
    results = {c: alignment_error_rate(gold, sweep.links(c, len(sents))) for c in sweep.hyps}
    text = SweepResult("gold", len(sents), ("none", "none", "sum_mean"), results).format()
    first, rolled = text.split("\nrolled out: ")
    assert first.split("\n")[1].split() == ["layer"] + [f"{s}-{sh}" for s in sources[:4] for sh in ("AWO", "AWI")]
    rows = rolled.split("\n")
    assert rows[1].split() == ["layer"] + [f"{s}-{sh}" for s in sources[4:] for sh in ("AWO", "AWI")]
    assert [r.split()[0] for r in rows[2:4]] == ["0", "1"] and rows[4].startswith("best layer:")
    assert "\n  alti: the source token's ALTI share" in text and "\n  rollout-X: " in text
    assert "rollout-alti = ALTI+" in text


@pytest.mark.e2e
def test_contributions_summary_reads_what_analyze_wrote(swept, tmp_path):
    """examples/replication/summarize_contributions.py: ALTI+'s source share (± 1.96 SE) and each source's best
    layer from stats.json / alignment.json; an analysis without the contributions is one line, nothing written."""
    _, analysis, sweep = swept
    stats = json.loads((analysis / "stats.json").read_text())
    script = REPO / "examples" / "replication" / "summarize_contributions.py"
    out = tmp_path / "summary"
    subprocess.run([sys.executable, str(script), str(out), f"rela={analysis}", "--gold-base", "0", "--bootstrap", "200"],
                   check=True, capture_output=True)
    text = (out / "results.md").read_text()
    best = {c: min(per, key=per.get) for c, per in sweep["per_layer"].items()}
    want = 100 * (sweep["per_layer"]["alti-AWO"][best["alti-AWO"]] - sweep["per_layer"]["weights-AWO"][best["weights-AWO"]])
    assert (f"| rela | alti-AWO L{best['alti-AWO']} | weights-AWO L{best['weights-AWO']} | "
            f"{round(want, 1) + 0.0:+.1f} | [") in text  # the paired bootstrap's point: the sweep's own difference
    wrong = subprocess.run([sys.executable, str(script), str(tmp_path / "wrong"), f"rela={analysis}"], text=True,
                           capture_output=True)  # the toy gold is 0-based: read as 1-based, no file's AER fits
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1 and "Traceback" not in wrong.stderr
    assert not (tmp_path / "wrong").exists()
    alti = stats["contributions"]["alti"]
    row = next(line for line in text.splitlines() if line.startswith("| rela |")).split(" | ")
    assert row[4] == f"{alti['source_share'][0]:.3f} ± {1.96 * alti['source_share_se'][0]:.3f}"
    for config, per in sweep["per_layer"].items():
        layer = min(per, key=per.get)
        assert f"| {config} | L{layer} ({100 * per[layer]:.1f}) |" in text
    assert (out / "rela" / "alignment.txt").is_file() and (out / "source_share.png").stat().st_size > 0
    saved = json.loads((out / "results.json").read_text())["rela"]
    assert saved["contributions"] == stats["contributions"] and saved["num_updates"] == stats["num_updates"]
    # a layer without a standard error (one sentence reaches it): drawn without an error bar, the cell without ±
    lone = tmp_path / "lone"
    lone.mkdir()
    for source in stats["contributions"].values():
        source["source_share_se"] = [None] * len(source["source_share_se"])
    (lone / "stats.json").write_text(json.dumps(stats))
    subprocess.run([sys.executable, str(script), str(tmp_path / "lone-out"), f"lone={lone}"], check=True,
                   capture_output=True)
    assert f"| {alti['source_share'][0]:.3f} |" in (tmp_path / "lone-out" / "results.md").read_text()
    # an analysis without ALTI+ (stats.json from before it): refused in one line, before anything is written
    old = tmp_path / "old"
    old.mkdir()
    (old / "stats.json").write_text(json.dumps({k: v for k, v in stats.items() if k != "contributions"}))
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "none"), f"old={old}"], capture_output=True,
                          text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "source share" in done.stderr
    assert not (tmp_path / "none").exists()
