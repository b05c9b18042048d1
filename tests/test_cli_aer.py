"""fairseq-rela-aer never gives a wrong answer with exit 0: repeated ids, odd digits, odd bytes and
mismatched files are one-line errors (or handled by a documented rule).  Most cases run the command's
``cli_main`` in-process (fast); the console script itself is run once for each kind of outcome."""
import json
import re
from types import SimpleNamespace

import pytest

from fairseq_rela.cli.aer import cli_main
from tests.helpers import run_cli

GOLD = "1-1 2-2\n1-2 2-1\n"  # two sentences, 1-based


def _nbest_output(doubled: bool = False) -> str:
    """A fairseq-generate --nbest 2 style output: per sentence S-, T-, then (H-, D-, P-, A-) x 2."""
    out = []
    for i, (best, second) in enumerate([("0-0 1-1", "0-1"), ("0-1 1-0", "1-1")]):
        out += [f"S-{i}\ta b", f"T-{i}\tA B"]
        for rank, links in enumerate((best, second)):
            out += [f"H-{i}\t-0.{rank + 1}\tA B", f"D-{i}\t-0.{rank + 1}\tA B", f"P-{i}\t-0.1 -0.2", f"A-{i}\t{links}"]
    text = "\n".join(out) + "\n"
    return text


def _aer(tmp_path, hyp: str, *args, gold: str = GOLD, check=True, capsys=None):
    """Run fairseq-rela-aer --json: in-process when ``capsys`` is given, else the console script."""
    (tmp_path / "gold").write_text(gold, encoding="utf-8")
    (tmp_path / "hyp").write_text(hyp, encoding="utf-8") if isinstance(hyp, str) else (tmp_path / "hyp").write_bytes(hyp)
    argv = ["--gold", str(tmp_path / "gold"), "--hyp", str(tmp_path / "hyp"), "--json", *map(str, args)]
    if capsys is None:
        return run_cli("fairseq-rela-aer", *argv, check=check)
    code = 0
    try:
        cli_main(argv)
    except SystemExit as exit_:
        code = exit_.code
        if isinstance(code, str):  # sys.exit(message): Python prints it to stderr and exits 1
            print(code, file=__import__("sys").stderr)
            code = 1
    out, err = capsys.readouterr()
    assert not check or code == 0, err
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def _one_line_error(proc, pattern: str) -> str:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert all(": warning: " in line for line in lines[:-1]), proc.stderr
    line = lines[-1]
    assert line.startswith("fairseq-rela-aer: error: ") and re.search(pattern, line), line
    return line


@pytest.mark.e2e
def test_nbest_output_scores_the_best_hypothesis_by_default(tmp_path):
    """Through the console script."""
    best = json.loads(_aer(tmp_path, _nbest_output()).stdout)
    assert best["aer"] == pytest.approx(0.0)  # the first-listed hypotheses are the gold
    second = json.loads(_aer(tmp_path, _nbest_output(), "--nbest-index", "1").stdout)
    # second hypotheses: {0-1} vs sure {0-0,1-1} and {1-1} vs sure {0-1,1-0}: no hits, 2 hyp + 4 sure links
    assert second["aer"] == pytest.approx(1.0) and second["hyp_links"] == 2
    assert "nbest-index:1" in second["signature"]
    _one_line_error(_aer(tmp_path, _nbest_output(), "--nbest-index", "2", check=False), r"only 2 hypothesis")


@pytest.mark.unit
def test_concatenated_outputs_are_an_error_naming_the_ids(tmp_path, capsys):
    one = "S-0\ta b\nA-0\t0-0 1-1\nS-1\ta b\nA-1\t0-1 1-0\n"
    assert json.loads(_aer(tmp_path, one, capsys=capsys).stdout)["aer"] == pytest.approx(0.0)
    _one_line_error(_aer(tmp_path, one + one, check=False, capsys=capsys), r"sentence ids 0, 1 appear in more than one S- line")
    _one_line_error(_aer(tmp_path, _nbest_output() * 2, check=False, capsys=capsys), r"ids 0, 1 appear in more than one S- line")
    # A- lines alone: --nbest hypotheses and concatenation cannot be told apart
    a_only = "A-0\t0-0 1-1\nA-1\t0-1 1-0\n"
    _one_line_error(_aer(tmp_path, a_only * 2, check=False, capsys=capsys), r"A- lines repeat for sentence ids 0, 1")


@pytest.mark.unit
@pytest.mark.parametrize("hyp,pattern", [
    ("0-0 1-1\n\u0660-\u0664\n", r"hyp:2: malformed link '٠-٤'"),  # Arabic-Indic digits
    ("0-0 1-1\n\uff10-\uff14\n", r"hyp:2: malformed link '０-４'"),  # full-width digits
    ("A-0\t0-0 1-1\nA-1\t0-1\nA-\u0665\t0-0\n", r"hyp:3: malformed fairseq A- line"),
    ("0-0 1-1\n0-" + "9" * 5000 + "\n", r"hyp:2: link '0-9999.*index too large"),
    ("A-" + "1" * 5000 + "\t0-0\nA-0\t0-0\n", r"hyp:1: malformed fairseq A- line"),
    (b"0-0 1-1\n0-1 \xff1-0\n", r"hyp:2: not UTF-8 text \(byte 0xff at column 5\)"),
    ("A-0\t0-0\n", r"no A- line for sentence 1 \(1 of 2 missing\).*--required-batch-size-multiple 1.*"
                   r"--skip-invalid-size-inputs-valid-test"),
    ("A-0\t0-0\nA-1\t0-0\nA-2\t0-0\n", r"A- line for sentence id 2, but there are only 2 sentences"),
    ("S-0\tx\nH-0\t-1\tX\n", r"without A- lines: run fairseq-generate with --print-alignment"),
])
def test_bad_hypothesis_is_one_line(tmp_path, hyp, pattern, capsys):
    _one_line_error(_aer(tmp_path, hyp, check=False, capsys=capsys), pattern)


@pytest.mark.unit
def test_empty_gold_is_an_error(tmp_path, capsys):
    _one_line_error(_aer(tmp_path, "", gold="", check=False, capsys=capsys), r"gold: no gold links at all \(0 lines\)")
    _one_line_error(_aer(tmp_path, "\n\n", gold="\n\n", check=False, capsys=capsys), r"gold: no gold links at all \(2 lines\)")


@pytest.mark.unit
def test_utf8_bom_is_stripped(tmp_path, capsys):
    out = json.loads(_aer(tmp_path, b"\xef\xbb\xbf0-0 1-1\n0-1 1-0\n", gold="\ufeff" + GOLD, capsys=capsys).stdout)
    assert out["aer"] == pytest.approx(0.0) and out["sentences"] == 2


@pytest.mark.unit
@pytest.mark.parametrize("src,blamed", [("a b\n", "SRC: 1 sentences, but .*gold has 2"),
                                        ("a b\na b\na b\n", "SRC: 3 sentences, but .*gold has 2")])
def test_src_with_another_sentence_count_is_blamed(tmp_path, src, blamed, capsys):
    (tmp_path / "SRC").write_text(src)
    (tmp_path / "TGT").write_text("A B\nA B\n")
    proc = _aer(tmp_path, "0-0 1-1\n0-1 1-0\n", "--src", tmp_path / "SRC", "--tgt", tmp_path / "TGT", check=False, capsys=capsys)
    _one_line_error(proc, blamed)
    (tmp_path / "SRC").write_text("a b\na b\n")
    ok = _aer(tmp_path, "0-0 1-1\n0-1 1-0\n", "--src", tmp_path / "SRC", "--tgt", tmp_path / "TGT", capsys=capsys)
    assert json.loads(ok.stdout)["aer"] == pytest.approx(0.0)


@pytest.mark.unit
def test_bad_nbest_index_is_an_argparse_error(tmp_path, capsys):
    proc = _aer(tmp_path, "0-0\n0-0\n", "--nbest-index", "-1", check=False, capsys=capsys)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--nbest-index: expected a number >= 0" in proc.stderr.strip().splitlines()[-1]
    _one_line_error(_aer(tmp_path, "0-0\n0-0\n", "--nbest-index", "1", check=False, capsys=capsys), r"applies to fairseq-generate")


@pytest.mark.e2e
@pytest.mark.parametrize("gold,hyp,args,message", [
    ("1-1\n", "0-0\n0-1\n", [], "hyp: 2 sentences, but .*gold has 1"),
    ("1-x\n", "0-0\n", [], r"gold:1: malformed link '1-x'"),
    ("1-1\n2p\n", "0-0\n0-0\n", [], r"gold:2: malformed link '2p'"),
    ("1-1\n", "0p0\n", [], r"hyp:1: malformed link '0p0' \(expected i-j\)"),
    ("0-1\n", "0-0\n", [], r"gold:1: link '0-1' has index 0, impossible in a 1-based file"),
    ("1-1 3-3\n", "0-0 5-5\n", ["--src", "SRC", "--tgt", "TGT"], r"hyp:1: link 5-5 \(0-based\) is past the sentence length"),
])
def test_aer_cli_bad_input_is_one_line(tmp_path, gold, hyp, args, message):
    (tmp_path / "gold").write_text(gold)
    (tmp_path / "hyp").write_text(hyp)
    (tmp_path / "SRC").write_text("a b c\n")
    (tmp_path / "TGT").write_text("A B C\n")
    args = [str(tmp_path / a) if a in ("SRC", "TGT") else a for a in args]
    proc = run_cli("fairseq-rela-aer", "--gold", tmp_path / "gold", "--hyp", tmp_path / "hyp", *args, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("fairseq-rela-aer: error: ")
    import re
    assert re.search(message, line), line


@pytest.mark.e2e
def test_aer_cli_warns_on_a_shifted_index_base_and_prints_json(tmp_path):
    (tmp_path / "gold").write_text("1-1 2-2 3-3\n1-2 2-1\n")
    (tmp_path / "hyp").write_text("1-1 2-2 3-3\n1-2 2-1\n")  # 1-based, read as 0-based
    proc = run_cli("fairseq-rela-aer", "--gold", tmp_path / "gold", "--hyp", tmp_path / "hyp", "--json")
    assert "warning" in proc.stderr and "--hyp-base 1" in proc.stderr
    out = json.loads(proc.stdout)
    assert out["aer"] == pytest.approx(0.6) and out["signature"].startswith("fairseq-rela-aer|gold-base:1|hyp-base:0")
    assert len(out["warnings"]) == 1 and "--hyp-base 1" in out["warnings"][0]  # a JSON reader sees it too
    ok = run_cli("fairseq-rela-aer", "--gold", tmp_path / "gold", "--hyp", tmp_path / "hyp", "--hyp-base", "1")
    assert ok.stdout.startswith("AER 0.0") and not ok.stderr
    clean = run_cli("fairseq-rela-aer", "--gold", tmp_path / "gold", "--hyp", tmp_path / "hyp", "--hyp-base", "1",
                    "--json")
    assert json.loads(clean.stdout)["warnings"] == []


@pytest.mark.e2e
def test_empty_gold_line_is_a_warning_not_an_error(tmp_path):
    (tmp_path / "gold").write_text("1-1\n\n")
    (tmp_path / "hyp").write_text("0-0\n\n")
    proc = run_cli("fairseq-rela-aer", "--gold", tmp_path / "gold", "--hyp", tmp_path / "hyp")
    assert "gold:2: empty line" in proc.stderr and proc.stdout.startswith("AER 0.0")


@pytest.mark.unit
@pytest.mark.parametrize("given", ["--src", "--tgt"])
def test_src_and_tgt_go_together(tmp_path, capsys, given):
    (tmp_path / "TEXT").write_text("a b\na b\n")
    proc = _aer(tmp_path, "0-0\n0-0\n", given, tmp_path / "TEXT", check=False, capsys=capsys)
    assert _one_line_error(proc, "go together") == "fairseq-rela-aer: error: --src and --tgt go together"


@pytest.mark.unit
def test_shift_hint_never_repeats_an_option_given(tmp_path, capsys):
    # a 1-based gold read with --gold-base 0: the fix is --gold-base 1, never the --gold-base 0 already given
    proc = _aer(tmp_path, "0-0 1-1 2-2\n0-1 1-0\n", "--gold-base", "0", gold="1-1 2-2 3-3\n1-2 2-1\n", capsys=capsys)
    assert "try --gold-base 1" in proc.stderr and "--gold-base 0" not in proc.stderr, proc.stderr


def _generate(pairs, links, hyps=None, post_processed=False) -> str:
    """A fairseq-generate output: per sentence S-, T-, H-, D-, P-, A- (T- escapes unknown words)."""
    out = []
    for i, ((s, t), a, h) in enumerate(zip(pairs, links, hyps or [None] * len(pairs))):
        h = t.replace("<<unk>>", "<unk>") if h is None else h
        out += [f"S-{i}\t{s}", f"T-{i}\t{t}", f"H-{i}\t-0.3\t{h}", f"D-{i}\t-0.3\t{h}", f"P-{i}\t-0.1", f"A-{i}\t{a}"]
    return "\n".join(out) + "\n"


@pytest.mark.unit
def test_beam_hypotheses_are_refused(tmp_path, capsys):
    pairs = [("a b", "A B"), ("a b", "B <<unk>>")]
    reference = _generate(pairs, ["0-0 1-1", "0-1 1-0"])  # --score-reference: H- = T- (unknown words unescaped)
    assert json.loads(_aer(tmp_path, reference, capsys=capsys).stdout)["aer"] == pytest.approx(0.0)
    beam = _generate(pairs, ["0-0 1-1", "0-1 1-0 1-2"], hyps=["A B", "B A C"])
    line = _one_line_error(_aer(tmp_path, beam, check=False, capsys=capsys), "hyp: the A- links")
    assert line.endswith("hyp: the A- links of 1 of 2 sentences (first: sentence 1) align the beam hypothesis (H-), "
                         "not the reference (T-): rerun fairseq-generate with --score-reference (or pass "
                         "--allow-hypothesis-links if the hypotheses are aligned on purpose)")
    # the hypothesis blamed before the lengths (it is longer than --tgt), and --reverse-hyp changes nothing
    (tmp_path / "SRC").write_text("a b\na b\n")
    (tmp_path / "TGT").write_text("A B\nB C\n")
    for extra in (["--src", tmp_path / "SRC", "--tgt", tmp_path / "TGT"], ["--reverse-hyp"]):
        _one_line_error(_aer(tmp_path, beam, *extra, check=False, capsys=capsys), r"align the beam hypothesis \(H-\)")
    out = json.loads(_aer(tmp_path, beam, "--allow-hypothesis-links", capsys=capsys).stdout)
    assert out["hyp_links"] == 5 and "aligns:hypothesis" in out["signature"]


@pytest.fixture(scope="module")
def spm_generated(tmp_path_factory):
    """Real fairseq-generate outputs of a toy corpus in sentencepiece pieces (``▁w1 2`` for ``w12``): a model
    trained 3 updates, decoded with --score-reference and with beam search, each with and without
    --post-process sentencepiece.  {(mode, post_process): stdout}, and the word-level gold."""
    from fairseq_rela.toy import write_toy_corpus
    from tests.helpers import TRAIN_ARGS, USER_DIR

    d = tmp_path_factory.mktemp("spm")
    write_toy_corpus(d / "words", splits=(("train", 200), ("valid", 20), ("test", 41)))
    for split in ("train", "valid", "test"):
        for lang in ("src", "tgt"):
            words = (d / "words" / f"{split}.{lang}").read_text().splitlines()
            (d / f"{split}.{lang}").write_text("".join(
                " ".join(f"\u2581{w[:2]} {w[2:]}" if len(w) > 2 else f"\u2581{w}" for w in line.split()) + "\n"
                for line in words))
    run_cli("fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt", "--trainpref", d / "train",
            "--validpref", d / "valid", "--testpref", d / "test", "--destdir", d / "bin", "--workers", "1")
    run_cli("fairseq-train", d / "bin", "--user-dir", USER_DIR, *TRAIN_ARGS, "--max-update", "3",
            "--save-dir", d / "ckpt")
    outputs = {}
    for mode in ("--score-reference", "--beam=2"):
        for post in ([], ["--post-process", "sentencepiece"]):
            outputs[mode, bool(post)] = run_cli(
                "fairseq-generate", d / "bin", "--user-dir", USER_DIR, "--task", "translation_alignment", "--path",
                d / "ckpt" / "checkpoint_last.pt", "--print-alignment", "--cpu", "--gen-subset", "test",
                "--required-batch-size-multiple", "1", "--max-tokens", "300", "--max-len-b", "5", mode, *post).stdout
    return outputs, (d / "words" / "test.align").read_text()


@pytest.mark.e2e
@pytest.mark.parametrize("post_process", [False, True], ids=["pieces", "post-processed"])
def test_real_generate_outputs_score_only_the_reference(spm_generated, tmp_path, post_process):
    outputs, gold = spm_generated
    reference, beam = outputs["--score-reference", post_process], outputs["--beam=2", post_process]
    t_line = next(line for line in reference.splitlines() if line.startswith("T-"))
    assert ("\u2581" in t_line) is not post_process  # the two kinds of output really differ
    ok = json.loads(_aer(tmp_path, reference, "--gold-base", "0", gold=gold).stdout)
    assert ok["sentences"] == 41
    line = _one_line_error(_aer(tmp_path, beam, "--gold-base", "0", gold=gold, check=False), "hyp: the A- links")
    n = int(re.search(r"A- links of (\d+) of 41 sentences", line).group(1))
    hyps = [line.split("\t")[2] for line in beam.splitlines() if line.startswith("D-")]
    refs = [line.split("\t")[1] for line in beam.splitlines() if line.startswith("T-")]
    assert n == sum(h != r for h, r in zip(hyps, refs)) > 0  # counted independently: the hypotheses that differ
    assert json.loads(_aer(tmp_path, beam, "--gold-base", "0", "--allow-hypothesis-links", gold=gold).stdout)[
        "sentences"] == 41


@pytest.mark.unit
@pytest.mark.realdata
def test_rwth_gold_target_source_is_warned(tmp_path, capsys):
    """The RWTH gold's sure links as a 0-based hypothesis: no warning; the same links target-source (what a
    swapped fairseq-rela-symmetrize gives): a warning naming --reverse-hyp, and none with it."""
    from fairseq_rela.alignment.aer import read_gold
    from tests.helpers import SHARED_DATA

    gold_path = SHARED_DATA / "rwth-deen" / "alignment.talp"
    gold = read_gold(str(gold_path))
    straight = "".join(" ".join(f"{i}-{j}" for i, j in sorted(g.sure)) + "\n" for g in gold)
    swapped = "".join(" ".join(f"{j}-{i}" for i, j in sorted(g.sure)) + "\n" for g in gold)
    proc = _aer(tmp_path, straight, gold=gold_path.read_text(), capsys=capsys)
    assert "warning" not in proc.stderr
    proc = _aer(tmp_path, swapped, gold=gold_path.read_text(), capsys=capsys)
    assert "fit the gold much better with source and target swapped" in proc.stderr
    assert "try with --reverse-hyp" in proc.stderr
    proc = _aer(tmp_path, swapped, "--reverse-hyp", gold=gold_path.read_text(), capsys=capsys)
    assert "warning" not in proc.stderr and json.loads(proc.stdout)["aer"] == pytest.approx(
        json.loads(_aer(tmp_path, straight, gold=gold_path.read_text(), capsys=capsys).stdout)["aer"])


@pytest.mark.unit
def test_generate_links_past_their_own_sentence_lengths_are_an_error(tmp_path, capsys):
    """Without --src/--tgt, a fairseq-generate output's S-/H- lines give the lengths its links must fit."""
    ok = "S-0\ta b\nH-0\t-1\tA B\nA-0\t0-0 1-1\nS-1\ta b\nH-1\t-1\tA B\nA-1\t0-1 1-0\n"
    assert json.loads(_aer(tmp_path, ok, capsys=capsys).stdout)["aer"] == pytest.approx(0.0)
    _one_line_error(_aer(tmp_path, ok.replace("A-1\t0-1 1-0", "A-1\t0-1 32-1"), check=False, capsys=capsys),
                    r"hyp:6: sentence 1: link 32-1 is past the sentence length \(2 source words")
