"""fairseq-rela-symmetrize: two directions' alignments -> one, through the console script."""
import random
import re

import pytest

from fairseq_rela.cli.symmetrize import cli_main
from tests.helpers import run_cli
from tests.reference import symmetrize_ref

# Sentence 0 is worked by hand (links de-en): forward {0-0, 1-1, 3-4}; backward, an En->De model's
# links en-de "0-0 1-1 2-1 4-5" = de-en {0-0, 1-1, 1-2, 5-4}.  Intersection {0-0, 1-1}; grow-diag adds
# 1-2 (next to 1-1, English 2 unaligned); final-and adds 3-4 (both words unaligned), then not 5-4
# (English 4 now aligned).  Sentence 1: only the forward direction has a link, kept by final-and.
FORWARD_GEN = "S-1\tx\nH-1\t-1\tX\nA-1\t0-1\nS-0\ta\nH-0\t-1\tA\nA-0\t0-0 1-1 3-4\n"  # ids out of order
BACKWARD_PHARAOH = "0-0 1-1 2-1 4-5\n\n"
EXPECTED = {
    "grow-diag-final-and": ["0-0 1-1 1-2 3-4", "0-1"],
    "grow-diag": ["0-0 1-1 1-2", ""],
    "intersection": ["0-0 1-1", ""],
    "union": ["0-0 1-1 1-2 3-4 5-4", "0-1"],
}


def _files(tmp_path, forward=FORWARD_GEN, backward=BACKWARD_PHARAOH):
    (tmp_path / "fwd").write_text(forward)
    (tmp_path / "bwd").write_text(backward)
    (tmp_path / "src").write_text("a b c d e f\na b\n")
    (tmp_path / "tgt").write_text("A B C D E\nA B\n")
    return ["--forward", str(tmp_path / "fwd"), "--backward", str(tmp_path / "bwd"),
            "--src", str(tmp_path / "src"), "--tgt", str(tmp_path / "tgt")]


@pytest.mark.unit
@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_hand_made_case(tmp_path, capsys, method):
    cli_main(_files(tmp_path) + ["--method", method])
    assert capsys.readouterr().out.splitlines() == EXPECTED[method]


@pytest.mark.e2e
def test_console_script_writes_the_output_file(tmp_path):
    proc = run_cli("fairseq-rela-symmetrize", *_files(tmp_path), "--output", tmp_path / "sym")
    assert proc.stdout == "" and (tmp_path / "sym").read_text().splitlines() == EXPECTED["grow-diag-final-and"]
    assert (tmp_path / "sym").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask():
    import os
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.unit
def test_agrees_with_the_reference_implementation(tmp_path, capsys):
    """Random directional alignments (forward as a fairseq output, backward as 1-based Pharaoh en-de) against
    tests/reference.py's loop-by-loop symal."""
    rng = random.Random(0)
    fwd, bwd = [], []
    for _ in range(300):
        ns, nt = rng.randint(1, 9), rng.randint(1, 9)
        cells = [(s, t) for s in range(ns) for t in range(nt)]
        fwd.append(set(rng.sample(cells, rng.randint(0, len(cells) // 2))))
        bwd.append(set(rng.sample(cells, rng.randint(0, len(cells) // 2))))
    gen = "".join(f"S-{i}\tx\nA-{i}\t{' '.join(f'{s}-{t}' for s, t in sorted(f))}\n" for i, f in enumerate(fwd))
    pharaoh = "".join(" ".join(f"{t + 1}-{s + 1}" for s, t in sorted(b)) + "\n" for b in bwd)
    args = _files(tmp_path, gen, pharaoh)[:4] + ["--backward-base", "1"]
    for method in ("grow-diag-final-and", "grow-diag", "intersection", "union"):
        cli_main(args + ["--method", method])
        got = capsys.readouterr().out.splitlines()
        want = [" ".join(f"{s}-{t}" for s, t in sorted(symmetrize_ref(f, b, method))) for f, b in zip(fwd, bwd)]
        assert got == want, method
    grown = [symmetrize_ref(f, b, "grow-diag") - (f & b) for f, b in zip(fwd, bwd)]
    assert sum(any(abs(s - s2) == 1 and abs(t - t2) == 1 for s, t in g for s2, t2 in f & b) for g, f, b
               in zip(grown, fwd, bwd)) > 10  # diagonal growth happened


def _run(capsys, argv):
    """cli_main in-process: (exit code, stdout, last stderr line)."""
    try:
        cli_main([str(a) for a in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, str(code) if isinstance(code, str) else (err.strip().splitlines() or [""])[-1]


def _gen(pairs, links, hyps=None):
    """A fairseq-generate --print-alignment output of (source, target) sentence pairs."""
    return "".join(f"S-{i}\t{s}\nT-{i}\t{t}\nH-{i}\t-0.5\t{h}\nD-{i}\t-0.5\t{h}\nA-{i}\t{a}\n"
                   for i, ((s, t), a, h) in enumerate(zip(pairs, links, hyps or [t for _, t in pairs])))


DE_EN = [("a b c d e f", "A B C D E"), ("a b", "A B")]
EN_DE = [(t, s) for s, t in DE_EN]


@pytest.mark.unit
@pytest.mark.parametrize("given", ["--src", "--tgt"])
def test_src_and_tgt_go_together(tmp_path, capsys, given):
    args = _files(tmp_path)
    alone = args[:4] + args[args.index(given):args.index(given) + 2]
    code, out, line = _run(capsys, alone)
    assert code and not out and line == "fairseq-rela-symmetrize: error: --src and --tgt go together"


@pytest.mark.unit
def test_generate_outputs_are_checked_for_pairing_and_hypotheses(tmp_path, capsys):
    fwd = _gen(DE_EN, ["0-0 1-1 3-4", "0-1"])
    bwd = _gen(EN_DE, ["0-0 1-1 2-1 4-5", ""])
    code, out, _ = _run(capsys, _files(tmp_path, fwd, bwd))
    assert code == 0 and out.splitlines() == EXPECTED["grow-diag-final-and"]
    # the same direction twice; sentences in another order
    code, out, line = _run(capsys, _files(tmp_path, fwd, fwd)[:4])
    assert code and not out and re.search(r"fwd and .*bwd are the same direction", line), line
    code, _, line = _run(capsys, _files(tmp_path, fwd, _gen(EN_DE[::-1], ["0-0", "0-0"]))[:4])
    assert code and "do not hold the same sentences in the same order: sentence 0's S- text" in line, line
    # beam hypotheses (H- is not T-) in either input: refused unless --allow-hypothesis-links
    beam = _gen(EN_DE, ["0-0 1-1 2-1 4-5", "0-0"], ["a b c d e f", "a x"])
    code, _, line = _run(capsys, _files(tmp_path, fwd, beam)[:4])
    assert code and re.search(r"bwd: the A- links of 1 of 2 sentences \(first: sentence 1\) align the beam "
                              r"hypothesis \(H-\), not the reference \(T-\): rerun fairseq-generate with "
                              r"--score-reference", line), line
    assert _run(capsys, _files(tmp_path, fwd, beam)[:4] + ["--allow-hypothesis-links"])[0] == 0


@pytest.mark.unit
def test_swapped_directions_are_refused_with_src_and_tgt(tmp_path, capsys):
    fwd = _gen(DE_EN, ["0-0 1-1 3-4", "0-1"])
    bwd = _gen(EN_DE, ["0-0 1-1 2-1 4-5", ""])
    code, out, line = _run(capsys, _files(tmp_path, bwd, fwd))
    assert code and not out and re.search(r"fwd: its S- lines are the --tgt text .*--forward and --backward are "
                                          r"swapped", line), line
    # without --src/--tgt nothing tells the languages apart: documented, target-source output
    code, out, _ = _run(capsys, _files(tmp_path, bwd, fwd)[:4])
    assert code == 0 and out.splitlines()[0] == "0-0 1-1 2-1 4-5"
    # Pharaoh files: the lengths tell, and the message names the swap
    code, _, line = _run(capsys, _files(tmp_path, "0-0 1-1 2-1 4-5\n\n", "0-0 1-1 3-4\n0-1\n"))
    assert code and re.search(r"fwd:1: link 4-5 .* past the sentence length.*--forward and --backward are swapped",
                              line), line


@pytest.mark.e2e
@pytest.mark.parametrize("forward,backward,extra,pattern", [
    (FORWARD_GEN, "0-0\n", [], r"bwd: 1 sentences, but .*fwd has 2"),
    ("0-0\n0-0\n", "0-0\n0-0\n0-0\n", [], r"bwd: 3 sentences, but .*fwd has 2"),
    ("A-0\t0-0\nA-0\t0-1\n", "0-0\n", [], r"fwd: A- lines repeat for sentence ids 0"),
    (FORWARD_GEN, "0-0\n0-9\n", [], r"bwd:2: link 9-0 \(0-based\) is past the sentence length.*after reversing"),
    ("0-0\n0-٣\n", "0-0\n0-0\n", [], r"fwd:2: malformed link"),
    ("", "", [], r"fwd: no sentences"),
    (FORWARD_GEN, BACKWARD_PHARAOH, ["--output", "DIR"], r"--output .*: is a directory"),
])
def test_bad_input_is_one_line(tmp_path, forward, backward, extra, pattern):
    import re
    extra = [str(tmp_path) if e == "DIR" else e for e in extra]
    proc = run_cli("fairseq-rela-symmetrize", *_files(tmp_path, forward, backward), *extra, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("fairseq-rela-symmetrize: error: ") and re.search(pattern, line), line


@pytest.fixture(scope="module")
def rwth_generated(tmp_path_factory):
    """Real fairseq-generate --score-reference outputs of the 508 RWTH sentences in both directions, from
    models trained 2 updates on them: De->En on sentencepiece-style pieces decoded with --post-process
    sentencepiece; En->De on words with --thresholdsrc/--thresholdtgt 2 (rare words are <unk>, so the two
    directions' dictionaries differ).  Returns (forward path, backward path, test.de, test.en)."""
    from tests.helpers import SHARED_DATA, TRAIN_ARGS, USER_DIR

    d, rwth = tmp_path_factory.mktemp("rwth"), SHARED_DATA / "rwth-deen"
    pieces = d / "pieces"
    pieces.mkdir()
    for lang in ("de", "en"):
        words = (rwth / f"test.{lang}").read_text(encoding="utf-8").split("\n")[:-1]
        (pieces / f"test.{lang}").write_text("".join(
            " ".join(f"\u2581{w[:4]} {w[4:]}" if len(w) > 4 else f"\u2581{w}" for w in line.split()) + "\n"
            for line in words), encoding="utf-8")
    out = {}
    for name, (src, tgt), text, extra, post in (
            ("fwd", ("de", "en"), pieces, [], ["--post-process", "sentencepiece"]),
            ("bwd", ("en", "de"), rwth, ["--thresholdsrc", "2", "--thresholdtgt", "2"], [])):
        prefix = str(text / "test")
        run_cli("fairseq-preprocess", "--source-lang", src, "--target-lang", tgt, "--trainpref", prefix,
                "--validpref", prefix, "--testpref", prefix, "--destdir", d / name / "bin", "--workers", "1", *extra)
        run_cli("fairseq-train", d / name / "bin", "--user-dir", USER_DIR, *TRAIN_ARGS, "--max-update", "2",
                "--max-tokens", "4000", "--save-dir", d / name / "ckpt")
        gen = run_cli("fairseq-generate", d / name / "bin", "--user-dir", USER_DIR, "--task", "translation_alignment",
                      "--path", d / name / "ckpt" / "checkpoint_last.pt", "--print-alignment", "--cpu",
                      "--gen-subset", "test", "--required-batch-size-multiple", "1", "--max-tokens", "4000",
                      "--score-reference", *post).stdout
        out[name] = d / f"{name}.gen"
        out[name].write_text(gen, encoding="utf-8")
    return out["fwd"], out["bwd"], rwth / "test.de", rwth / "test.en"


def _pharaoh(gen_path, path):
    """The A- lines of a fairseq-generate output, in id order, as a Pharaoh file."""
    lines = dict(line[2:].split("\t", 1) for line in gen_path.read_text(encoding="utf-8").splitlines()
                 if line.startswith("A-"))
    path.write_text("".join(lines[str(i)] + "\n" for i in range(len(lines))))
    return path


@pytest.mark.e2e
@pytest.mark.realdata
def test_rwth_pairing_and_orientation_checks(rwth_generated, tmp_path):
    fwd, bwd, de, en = rwth_generated
    assert "<<unk>>" in bwd.read_text(encoding="utf-8") and "\u2581" not in fwd.read_text(encoding="utf-8")
    # the right pairing is accepted on all 508 sentences, with and without --src/--tgt
    for extra in ([], ["--src", de, "--tgt", en]):
        proc = run_cli("fairseq-rela-symmetrize", "--forward", fwd, "--backward", bwd, *extra)
        assert len(proc.stdout.splitlines()) == 508 and not proc.stderr
    checks = [
        ((bwd, fwd, "--src", de, "--tgt", en), r"bwd.gen: its S- lines are the --tgt text and its T- lines the "
                                                r"--src text \(508 of 508 sentences\): --forward and --backward are swapped"),
        ((fwd, fwd), r"are the same direction: --backward must be the other direction's output \(.*508 of 508"),
        ((bwd, bwd), r"are the same direction"),
        ((_pharaoh(bwd, tmp_path / "bwd.txt"), _pharaoh(fwd, tmp_path / "fwd.txt"), "--src", de, "--tgt", en),
         r"past the sentence length.*both inputs' links fit --tgt/--src the other way round: --forward and "
         r"--backward are swapped"),
    ]
    for (forward, backward, *extra), pattern in checks:
        proc = run_cli("fairseq-rela-symmetrize", "--forward", forward, "--backward", backward, *extra, check=False)
        assert proc.returncode == 1 and proc.stdout == "" and "Traceback" not in proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert re.search(pattern, line), line


@pytest.mark.unit
def test_generate_links_past_their_own_sentence_lengths_are_an_error(tmp_path, capsys):
    """Without --src/--tgt, each fairseq-generate input's S-/H- lines give the lengths its links must fit."""
    fwd, bwd = tmp_path / "fwd", tmp_path / "bwd"
    fwd.write_text(_gen(DE_EN, ["0-0 1-1 3-4", "0-1"]))
    bwd.write_text(_gen(EN_DE, ["0-0 1-1", "1-1"]))
    code, out, _ = _run(capsys, ["--forward", fwd, "--backward", bwd])
    assert code == 0 and out.splitlines()[0].startswith("0-0 1-1")
    bwd.write_text(_gen(EN_DE, ["0-0 1-1", "1-32"]))  # sentence 1 has 2 words a side
    code, out, err = _run(capsys, ["--forward", fwd, "--backward", bwd])
    assert code and out == "" and re.fullmatch(
        r"fairseq-rela-symmetrize: error: .*bwd:10: sentence 1: link 1-32 is past the sentence length .*", err), err


@pytest.mark.unit
def test_index_base_error_names_its_own_options(tmp_path, capsys):
    fwd, bwd = tmp_path / "fwd", tmp_path / "bwd"
    fwd.write_text("0-1\n")
    bwd.write_text("1-1\n")
    code, _, err = _run(capsys, ["--forward", fwd, "--backward", bwd, "--forward-base", "1", "--backward-base", "1"])
    assert code and "see --forward-base)" in err and "--gold-base" not in err and "--hyp-base" not in err, err
