"""fairseq-rela-analyze (cli/analyze.py) through its console script: the statistics it writes match an
independent computation; bad options and unusable inputs are one `error:` line before the pass over the data;
the output folder is a whole run or absent, never a mix."""
import json
import os
import re
import shutil

import pytest

from tests.helpers import USER_DIR, ParsedPage, heatmap_colours, independent_sparsity, render_in_chromium, run_cli

pytestmark = pytest.mark.e2e


def _analyze(toy_data, ckpt, out, *args, data=None):
    return run_cli("fairseq-rela-analyze", data or toy_data / "bin", "--path", ckpt, "--gen-subset", "test",
                   "--user-dir", USER_DIR, "--output-dir", out, "--cpu", "--no-progress-bar", *args, check=False)


def _error(proc, pattern: str) -> None:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("fairseq-rela-analyze: error: ") and re.search(pattern, line), line
    assert "sparsity" not in proc.stdout  # failed before the statistics were computed


def _leftovers(directory):
    return [n for n in os.listdir(directory) if ".incomplete-" in n or ".old-" in n]


@pytest.fixture(scope="module")
def ckpt(trained):
    return trained("softmax", 1)


def test_analyze_cli_writes_statistics_that_match_an_independent_computation(toy_data, trained, tmp_path):
    ckpt = trained("rela")
    proc = run_cli("fairseq-rela-analyze", toy_data / "bin", "--path", ckpt, "--gen-subset", "test", "--user-dir",
                   USER_DIR, "--output-dir", tmp_path, "--plot-sentences", "0,2", "--plot-kinds", "cross,encoder_self",
                   "--cpu", "--max-tokens", "300")  # several batches
    assert "cross" in proc.stdout and "sparsity" in proc.stdout
    stats = json.loads((tmp_path / "stats.json").read_text())
    for name in ("heads.png", "sentence-0-cross.png", "sentence-2-encoder_self.png", "stats.txt"):
        assert (tmp_path / name).stat().st_size > 0
    expected, n = independent_sparsity(ckpt, toy_data)
    assert stats["sentences"] == n == 41
    cross0 = stats["attention"]["cross"]["0"]
    assert cross0["sparsity_mean"] == pytest.approx(expected, abs=1e-9)
    assert 0 < expected < 1 and stats["attention_activation"] == "rela"


@pytest.mark.parametrize("args,pattern", [
    (["--plot-sentences", "a"], r"--plot-sentences 'a': expected comma-separated sentence ids"),
    (["--plot-sentences", "999"], r"--plot-sentences: sentence 999 does not exist; --gen-subset test has "
                                  r"sentences 0\.\.40"),
    (["--top-frequent", "-5"], r"--top-frequent -5: expected a number >= 0"),
    (["--plot-sentences", "3,0,3"], r"--plot-sentences '3,0,3': sentence 3 named twice"),
    (["--source-lang", "tgt", "--target-lang", "src"], r"--source-lang tgt: the checkpoint translates src -> tgt"),
    (["--target-lang", "src"], r"--target-lang src: the checkpoint translates src -> tgt \(its task's languages\)"),
    (["--max-source-positions", "7"], r"Size of sample #\d+ is invalid.*--skip-invalid-size-inputs-valid-test"),
])
def test_bad_option_is_one_line_and_leaves_nothing(toy_data, ckpt, tmp_path, args, pattern):
    _error(_analyze(toy_data, ckpt, tmp_path / "out", *args), pattern)
    assert not os.listdir(tmp_path)  # no output folder, no staging folder left


def test_unusable_output_path_fails_first(toy_data, ckpt, tmp_path):
    (tmp_path / "file").write_text("x")
    _error(_analyze(toy_data, ckpt, tmp_path / "file"), r"--output-dir .*file: exists and is not a folder")
    _error(_analyze(toy_data, ckpt, tmp_path / "file" / "out"), r"--output-dir .*file/out: cannot write there")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    _error(_analyze(toy_data, ckpt, tmp_path / "mine"), r"holds files that are not fairseq-rela-analyze outputs "
                                                         r"\('notes.txt'\)")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_truncated_checkpoint_and_other_dictionary(toy_data, ckpt, tmp_path):
    data = ckpt.read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    _error(_analyze(toy_data, tmp_path / "half.pt", tmp_path / "out"), r"--path .*half\.pt: truncated: the zip archive")
    other = tmp_path / "other-bin"
    run_cli("fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt", "--trainpref", toy_data / "test",
            "--testpref", toy_data / "test",
            "--destdir", other, "--workers", "1", "--nwordssrc", "12", "--nwordstgt", "12")
    _error(_analyze(toy_data, ckpt, tmp_path / "out", data=other),
           r"its embeddings do not fit the dictionaries in .*other-bin \(size mismatch\)")
    assert not _leftovers(tmp_path)


def test_damaged_or_non_finite_checkpoint_is_one_line_before_any_work(toy_data, ckpt, tmp_path):
    """A few flipped bytes inside a tensor (torch.load reads them: it checks no CRC), a weight of 2e28 in a
    valid file, a 0-byte file: one line naming the checkpoint, nothing written, never statistics of NaN."""
    from tests.helpers import damage_tensor_bytes, resave_with

    damage_tensor_bytes(ckpt, tmp_path / "flipped.pt")
    resave_with(ckpt, tmp_path / "big.pt", "encoder.layers.0.fc1.weight", 2e28)
    (tmp_path / "empty.pt").write_bytes(b"")
    for name, pattern in (("flipped.pt", r"flipped\.pt: damaged: \S+/data/\d+ fails its CRC check"),
                          ("big.pt", r"big\.pt: encoder\.layers\.0\.fc1\.weight holds 2e\+28, beyond"),
                          ("empty.pt", r"empty\.pt: the file is empty \(0 bytes\)$")):
        _error(_analyze(toy_data, tmp_path / name, tmp_path / "out", "--no-plots"), rf"^fairseq-rela-analyze: error: "
               rf"--path .*{pattern}")
        assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


def test_a_full_disk_fails_before_claiming_success_and_leaves_nothing(toy_data, ckpt, tmp_path, monkeypatch, capsys):
    """ENOSPC while writing heads.png (after stats.json and stats.txt were written): one line, no table printed,
    no output folder, no staging folder; the old outputs of a previous run untouched."""
    import errno

    from fairseq import options

    from fairseq_rela.cli import analyze, files

    out = tmp_path / "out"
    out.mkdir()
    (out / "stats.json").write_text('{"old": true}')
    real_replace = files.os.replace

    def replace(src, dst):
        if os.path.basename(dst) == "heads.png":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    args = options.parse_args_and_arch(analyze.get_parser(), [
        str(toy_data / "bin"), "--user-dir", USER_DIR, "--path", str(ckpt), "--gen-subset", "test", "--output-dir",
        str(out), "--cpu", "--no-progress-bar", "--plot-sentences", ""])
    with pytest.raises(SystemExit) as exit_:
        analyze.main(args)
    assert str(exit_.value) == (f"fairseq-rela-analyze: error: --output-dir {out}: cannot write heads.png (No space "
                                "left on device); nothing was written")
    assert capsys.readouterr().out == ""  # the table is printed only once every file is in place
    assert os.listdir(out) == ["stats.json"] and (out / "stats.json").read_text() == '{"old": true}'
    assert not _leftovers(tmp_path)


def test_rerun_replaces_the_folder_whole(toy_data, ckpt, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stats.json").write_text('{"stale": true}')
    (out / "sentence-7-cross.png").write_bytes(b"old")
    failed = _analyze(toy_data, ckpt, out, "--plot-sentences", "999")  # fails after loading the model
    assert failed.returncode != 0
    assert json.loads((out / "stats.json").read_text()) == {"stale": True}  # the old run is untouched
    assert not _leftovers(tmp_path)
    proc = _analyze(toy_data, ckpt, out, "--plot-sentences", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["heads.png", "sentence-1-cross.png", "stats.json", "stats.txt"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["sentences"] == 41 and stats["skipped_sentences"] == 0
    mask = os.umask(0)
    os.umask(mask)
    for name in os.listdir(out):  # stats.json like the other files: 0666 less the umask
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask
    assert not _leftovers(tmp_path)


def test_skip_invalid_size_inputs_is_honoured(toy_data, ckpt, tmp_path):
    src_lens = [len(line.split()) + 1 for line in (toy_data / "test.src").read_text().splitlines()]  # + </s>
    proc = _analyze(toy_data, ckpt, tmp_path / "out", "--max-source-positions", "7",
                    "--skip-invalid-size-inputs-valid-test", "--no-plots")
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    kept = sum(n <= 7 for n in src_lens)
    assert 0 < kept < 41 and stats["sentences"] == kept and stats["skipped_sentences"] == 41 - kept
    assert f"{41 - kept} of 41 sentences skipped" in proc.stderr  # the tool's own warnings are shown ...
    first = (tmp_path / "out" / "stats.txt").read_text().splitlines()[0]
    assert first.startswith(f"{kept} sentences of test") and f"; {41 - kept} more skipped" in first  # ... and kept
    noise = [line for line in proc.stderr.splitlines() if "DEBUG" in line or "INFO" in line]
    assert not noise, noise[:5]  # ... not fairseq's INFO nor matplotlib's DEBUG (importing fairseq sets DEBUG)
    gold = _analyze(toy_data, ckpt, tmp_path / "gold", "--max-source-positions", "7",
                    "--skip-invalid-size-inputs-valid-test", "--no-plots", "--gold-alignment",
                    toy_data / "test.align", "--gold-base", "0")
    assert gold.returncode != 0 and "Traceback" not in gold.stderr
    assert "the alignment sweep needs every sentence" in gold.stderr.strip().splitlines()[-1]
    shutil.rmtree(tmp_path / "out")
    assert not os.listdir(tmp_path)


def test_html_report_is_one_self_contained_page_that_a_browser_renders(toy_data, ckpt, tmp_path):
    out = tmp_path / "out"
    proc = _analyze(toy_data, ckpt, out, "--html", "--no-plots", "--plot-sentences", "3,0",
                    "--plot-kinds", "cross,decoder_self", "--gold-alignment", toy_data / "test.align", "--gold-base", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # --no-plots: no PNG, but the report still draws the chosen sentences
    assert sorted(os.listdir(out)) == ["alignment.json", "alignment.txt", "report.html", "stats.json", "stats.txt"]
    html = (out / "report.html").read_text(encoding="utf-8")
    page = ParsedPage(html)
    assert page.problems == [] and page.external_references() == []
    assert "http://" not in html and "https://" not in html
    assert [a["id"] for a in page.find("section", **{"class": "sentence"})] == ["sentence-0", "sentence-3"]
    for kind in ("cross", "decoder_self"):
        layers = page.find("div", **{"class": "layer", "data_sentence": 0, "data_kind": kind})
        assert [(a["data-layer"], a["data-heads"]) for a in layers] == [("0", "4"), ("1", "4")]
    assert page.find("div", data_kind="encoder_self", data_sentence=0) == []
    text = "".join(page.text)
    src0, tgt0 = [(toy_data / f"test.{s}").read_text().splitlines()[0] for s in ("src", "tgt")]
    assert f"{src0} </s>" in text and f"{tgt0} </s>" in text  # </s> shown as text, not a tag
    assert "s" not in {t for t, _ in page.tags}
    stats, alignment = (json.loads((out / f).read_text()) for f in ("stats.json", "alignment.json"))
    assert len(page.find("table", data_metric="sparsity")) == len(stats["attention"]) == 3
    for kind, layers in stats["attention"].items():
        (overview,) = page.find("div", **{"class": "overview", "data_kind": kind})
        assert overview["data-kind"] == kind
    assert [a["data-layer"] for a in page.find("tr") if "data-layer" in a][-2:] == ["0", "1"]  # the AER table
    (blob,) = [t for a, t in page.scripts if a.get("id") == "report-data"]
    sent0 = json.loads(blob)["sentences"][0]
    links = sent0["links"]
    assert links["config"] == alignment["best_layer"]["config"] and links["shift"] in ("AWO", "AWI")
    gold = [tuple(map(int, link.split("-"))) for link in (toy_data / "test.align").read_text().splitlines()[0].split()]
    d = links["shift"] == "AWI"
    assert sorted(map(tuple, links["sure"])) == sorted((t + d, s) for s, t in gold)  # words = tokens here
    assert 0 < len(links["predicted"]) <= len(tgt0.split())
    # a real browser: no script error, every map drawn, the maps visible in the screenshot
    dom, console, pixels = render_in_chromium(out / "report.html", tmp_path)
    assert console == [], console
    body = ParsedPage(dom).find("body")[0]
    assert "data-errors" not in body and body["data-rendered"] == str(2 * 2 * 2 * 3 + 2)  # sentences x kinds x layers x maps, + each sentence's ALTI+ map
    inert = tmp_path / "inert.html"  # the same page without its renderer: only the tables are shaded
    inert.write_text(html.replace(html[html.rindex("<script>"):html.rindex("</script>") + 9], ""), encoding="utf-8")
    _, _, blank = render_in_chromium(inert, tmp_path)
    assert heatmap_colours(pixels) > heatmap_colours(blank) + 30



# --- masked LMs: a roberta checkpoint of the stock fairseq-train --task masked_lm ----------------------------------

def test_a_roberta_checkpoint_is_analysed_sentence_by_sentence(mlm_data, mlm_trained, tmp_path):
    """Only encoder self-attention, every layer, with <s> and </s> shares by weight and by norm; each test line
    is one unmasked sentence; the converted model's vectors still sum to each attention's output."""
    import torch

    from fairseq_rela.analysis.runner import load_checkpoint
    from fairseq_rela.attention import ReLAMultiheadAttention
    from fairseq_rela.recording import AttentionRecorder

    proc = _analyze(None, mlm_trained, tmp_path / "out", "--task", "masked_lm", "--plot-sentences", "0,2", "--html",
                    data=mlm_data / "bin")
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    lines = (mlm_data.parent / "test.src").read_text().split("\n")[:-1]
    assert stats["sentences"] == len(lines) and stats["skipped_sentences"] == 0
    assert list(stats["attention"]) == ["encoder_self"] and list(stats["attention"]["encoder_self"]) == ["0", "1"]
    assert stats["attention_activation"] == "softmax" and stats["num_updates"] == 5
    for fields in stats["attention"]["encoder_self"].values():
        shares = fields["token_share"]
        for source in ("weight", "norm"):
            assert sum(s[source] for s in shares.values()) == pytest.approx(1.0)
            assert shares["bos"][source] > 0 and shares["eos"][source] > 0
        assert fields["fx_norm_mean"]["bos"] > 0 and -1 <= fields["spearman_weight_fx"] <= 1
    assert "bos w/n" in proc.stdout and (tmp_path / "out" / "stats.txt").read_text() == proc.stdout
    assert sorted(os.listdir(tmp_path / "out")) == ["heads.png", "report.html", "sentence-0-encoder_self.png",
                                                    "sentence-2-encoder_self.png", "stats.json", "stats.txt"]
    assert "encoder_self" in (tmp_path / "out" / "report.html").read_text()

    model, task = load_checkpoint(str(mlm_trained), data=str(mlm_data / "bin"), device="cpu")
    src = task.source_dictionary
    tokens = [torch.tensor([src.bos(), *(src.index(w) for w in line.split()), src.eos()]) for line in lines[:4]]
    src_tokens = torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True, padding_value=src.pad())
    outputs = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: outputs.__setitem__(name, out[0]))
             for name, m in model.named_modules() if isinstance(m, ReLAMultiheadAttention)]
    with torch.no_grad(), AttentionRecorder(model, keep_vectors=True) as rec:
        model(src_tokens, features_only=True)
    for h in hooks:
        h.remove()
    assert len(outputs) == 2
    for name, out in outputs.items():
        (r,) = rec.records[("encoder_self", int(name.split(".")[3]))]
        torch.testing.assert_close(r.vectors.sum(2) + r.bias, out.transpose(0, 1), atol=1e-5, rtol=1e-5)


def test_a_task_that_does_not_fit_the_checkpoint_is_one_line(toy_data, ckpt, mlm_data, mlm_trained, tmp_path):
    for data, path, args, pattern in (
            (mlm_data / "bin", mlm_trained, (), r"--task translation: the checkpoint is a masked LM \(roberta_base "
             r"\(RobertaModel\)\); analyse it with --task masked_lm$"),
            (toy_data / "bin", ckpt, ("--task", "masked_lm"), r"--task masked_lm: the checkpoint is a translation model "
             r"\(rela_transformer_tiny \(RelaTransformerModel\)\); analyse it with its translation task"),
            (mlm_data / "bin", mlm_trained, ("--task", "masked_lm", "--plot-kinds", "cross"),
             r"--plot-kinds cross: a masked LM has only encoder_self attention$"),
            (mlm_data / "bin", mlm_trained, ("--task", "masked_lm", "--gold-alignment", toy_data / "test.align",
                                             "--gold-base", "0"),
             r"--gold-alignment: a masked LM has no cross-attention to align$"),
            (mlm_data / "bin", mlm_trained, ("--task", "masked_lm", "--write-links"),
             r"--write-links: a masked LM has no cross-attention to align$")):
        _error(_analyze(None, path, tmp_path / "out", *args, data=data), pattern)
        assert not os.listdir(tmp_path)


def test_gold_links_outside_the_sentences_are_one_line(toy_data, ckpt, tmp_path):
    """A gold file of another split (its links point past the words) is refused, never scored."""
    lines = (toy_data / "test.align").read_text().splitlines()
    lines[2] += " 0-99"
    (tmp_path / "wrong.align").write_text("\n".join(lines) + "\n")
    proc = _analyze(toy_data, ckpt, tmp_path / "out", "--no-plots", "--gold-alignment", tmp_path / "wrong.align",
                    "--gold-base", "0")
    _error(proc, r"--gold-alignment: .*wrong\.align: gold line 3: link 0-99 \(0-based\) outside a sentence of "
                 r"\d+ source and \d+ target words")
    assert "AER" not in proc.stdout and not (tmp_path / "out").exists() and not _leftovers(tmp_path)


def test_eflomal_text_in_the_inferred_languages_checked_first(toy_data, ckpt, tmp_path):
    """Without --source-lang/--target-lang the languages fairseq inferred (src, tgt) name the files; a
    missing file or a test text of another length is one line before eflomal or the pass runs."""
    gold = ("--gold-alignment", toy_data / "test.align", "--gold-base", "0", "--no-plots")
    (tmp_path / "short.src").write_text((toy_data / "test.src").read_text())
    (tmp_path / "short.tgt").write_text("".join((toy_data / "test.tgt").read_text().splitlines(True)[:-1]))
    for prefixes, pattern in (
            ((tmp_path / "none", toy_data / "test"), r"--eflomal-train: cannot read .*none\.src \(No such file"),
            ((toy_data / "train", tmp_path / "none"), r"--eflomal-test: cannot read .*none\.src \(No such file"),
            ((toy_data / "train", tmp_path / "short"), r"--eflomal-test: .*short\.tgt: 40 sentences, but "
                                                       r"--gold-alignment .*test\.align has 41")):
        proc = _analyze(toy_data, ckpt, tmp_path / "out", *gold, "--eflomal-train", prefixes[0],
                        "--eflomal-test", prefixes[1])
        _error(proc, pattern)
        assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


def test_output_dir_symlink_is_written_through(toy_data, ckpt, tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    for _ in range(2):  # first into the empty target, then replacing its own outputs
        proc = _analyze(toy_data, ckpt, tmp_path / "link", "--no-plots")
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert (tmp_path / "link").is_symlink() and (tmp_path / "target" / "stats.json").stat().st_size > 0
        assert not _leftovers(tmp_path)


@pytest.mark.parametrize("signum", [15, 2])
def test_a_signal_removes_the_staging_folder_quietly(toy_data, ckpt, tmp_path, signum):
    import signal
    import subprocess
    import time

    from tests.helpers import BIN

    cmd = [str(BIN / "fairseq-rela-analyze"), str(toy_data / "bin"), "--path", str(ckpt), "--gen-subset", "test",
           "--user-dir", str(USER_DIR), "--output-dir", str(tmp_path / "out"), "--cpu", "--no-progress-bar"]
    # as from a terminal: a test run started in the background of a non-interactive shell ignores SIGINT, and a
    # child inherits that (Python then installs no KeyboardInterrupt handler: the run finished with exit 0)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not _leftovers(tmp_path) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert _leftovers(tmp_path), "the run never staged its output"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum and "Traceback" not in err, err[-3000:]
    assert not _leftovers(tmp_path) and not (tmp_path / "out").exists()


def test_a_state_dict_with_missing_keys_names_them(toy_data, ckpt, tmp_path):
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    del state["model"]["decoder.layers.0.fc1.bias"]
    torch.save(state, tmp_path / "missing.pt")
    _error(_analyze(toy_data, tmp_path / "missing.pt", tmp_path / "out", "--no-plots"),
           r"--path .*missing\.pt: cannot load the checkpoint \(RuntimeError: Error\(s\) in loading state_dict for "
           r"\w+: Missing key\(s\) in state_dict: \"decoder\.layers\.0\.fc1\.bias\"")


def test_max_tokens_below_a_sentence_is_one_line(toy_data, ckpt, tmp_path):
    _error(_analyze(toy_data, ckpt, tmp_path / "out", "--no-plots", "--max-tokens", "5"),
           r"--max-tokens 5: Sentences lengths should not exceed max_tokens=5$")
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


def test_sentencepiece_merge_on_a_dictionary_without_pieces_is_one_line(toy_data, ckpt, tmp_path):
    _error(_analyze(toy_data, ckpt, tmp_path / "out", "--no-plots", "--write-links", "--merge-subwords",
                    "sentencepiece"), r"--merge-subwords sentencepiece: the source dictionary .*\u2581")
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


# ---------------------------------------------------------------- issue 36
def test_the_advice_on_long_sentences_names_the_limit_that_binds(toy_data, ckpt, tmp_path):
    """A checkpoint whose own limit (here 7 positions) is below --max-source-positions (fairseq's default
    1024): the message names the checkpoint's 7 and says no option raises it; a lower --max-source-positions
    is named with the advice to raise it up to the checkpoint's."""
    own = ("--model-overrides", "{'max_source_positions': 7, 'max_target_positions': 7}")
    proc = _analyze(toy_data, ckpt, tmp_path / "out", "--no-plots", *own)
    _error(proc, r"max_positions=\(7, 7\).*that limit is the checkpoint's own .*no option of fairseq-rela-analyze "
                 r"raises it")
    proc = _analyze(toy_data, ckpt, tmp_path / "out", "--no-plots", "--skip-invalid-size-inputs-valid-test",
                    "--write-links", *own)
    _error(proc, r"skipped by --skip-invalid-size-inputs-valid-test \(longer than the checkpoint's 7 source / 7 "
                 r"target positions\); --write-links writes a line for every sentence: that limit is the checkpoint's")
    assert "1024" not in proc.stderr.strip().splitlines()[-1]
    proc = _analyze(toy_data, ckpt, tmp_path / "out", "--no-plots", "--skip-invalid-size-inputs-valid-test",
                    "--write-links", "--max-source-positions", "7")
    _error(proc, r"\(longer than --max-source-positions 7\); .*: raise --max-source-positions \(the checkpoint takes "
                 r"up to 1024 source / 1024 target positions\)$")
    assert not os.listdir(tmp_path)


def test_bf16_and_fp16_are_honoured_on_the_cpu_and_recorded(toy_data, ckpt, tmp_path):
    stats = {}
    for flag, name in (("--bf16", "bfloat16"), (None, "float32")):
        proc = _analyze(toy_data, ckpt, tmp_path / name, "--no-plots", *([flag] if flag else []))
        assert proc.returncode == 0, proc.stderr[-2000:]
        stats[name] = json.loads((tmp_path / name / "stats.json").read_text())
        assert stats[name].pop("precision") == name
    assert stats["bfloat16"] != stats["float32"]  # computed in bfloat16, not silently in float32
    share = lambda s: s["attention"]["cross"]["0"]["token_share"]["eos"]["norm"]  # noqa: E731
    assert share(stats["bfloat16"]) == pytest.approx(share(stats["float32"]), abs=0.05)  # but close
    _error(_analyze(toy_data, ckpt, tmp_path / "both", "--fp16", "--bf16"), r"--fp16 and --bf16: choose one precision$")


def test_user_dir_of_another_copy_is_one_line_a_symlink_to_this_one_works(toy_data, ckpt, tmp_path):
    """fairseq cannot import a second package named fairseq_rela ("not globally unique"): another copy is one
    line naming the copy this command analyses with; a symlink to this copy (another spelling) is this copy."""
    other = tmp_path / "checkout" / "fairseq_rela"
    shutil.copytree(USER_DIR, other, ignore=shutil.ignore_patterns("__pycache__"))
    os.symlink(USER_DIR, tmp_path / "link")
    common = (toy_data / "bin", "--path", ckpt, "--gen-subset", "test", "--cpu", "--no-progress-bar", "--no-plots")
    proc = run_cli("fairseq-rela-analyze", *common, "--user-dir", other, "--output-dir", tmp_path / "o", check=False)
    _error(proc, rf"--user-dir {re.escape(str(other))}: fairseq-rela-analyze is part of the fairseq_rela in "
                 rf"{re.escape(os.path.dirname(__import__('fairseq_rela').__file__))} and analyses with that copy")
    proc = run_cli("fairseq-rela-analyze", *common, f"--user-dir={tmp_path / 'link'}", "--output-dir",
                   tmp_path / "o", check=False)
    assert proc.returncode == 0 and (tmp_path / "o" / "stats.json").is_file(), proc.stderr[-2000:]


def test_a_checkpoint_of_the_other_direction_than_the_data_is_named(toy_data, ckpt, tmp_path):
    """The toy dictionaries have the same size both ways, as a joined one: a tgt -> src checkpoint (here the
    src -> tgt one with its task's languages overridden) reads the src-tgt split reversed.  With a gold
    alignment (the data's direction) that is one line; the statistics alone come with a warning."""
    reverse = ("--model-overrides", "{'source_lang': 'tgt', 'target_lang': 'src'}")
    _error(_analyze(toy_data, ckpt, tmp_path / "out", "--no-plots", *reverse, "--gold-alignment",
                    toy_data / "test.align", "--gold-base", "0"),
           r"the checkpoint translates tgt -> src, but .* holds --gen-subset test binarised as src -> tgt "
           r"\(test\.src-tgt\.\*\).*--gold-alignment follows the data's direction")
    assert not os.listdir(tmp_path)


def test_a_missing_data_folder_or_bad_overrides_are_named_not_blamed_on_the_checkpoint(toy_data, ckpt, tmp_path):
    _error(_analyze(toy_data, ckpt, tmp_path / "out", data=tmp_path / "nodata"), r"DATA .*nodata: no such folder")
    _error(_analyze(toy_data, ckpt, tmp_path / "out", "--model-overrides", "{'a':"),
           r"--model-overrides \{'a':: not a Python dict \(SyntaxError: ")
    _error(_analyze(toy_data, ckpt, tmp_path / "out", "--model-overrides", "[1]"),
           r"--model-overrides \[1\]: not a Python dict \(list\)$")
    assert not os.listdir(tmp_path)
