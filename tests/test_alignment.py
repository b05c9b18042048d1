"""Alignment extraction, subword merging, the AER scorer and symmetrisation, on hand-made cases."""
import json

import numpy as np
import pytest

from fairseq_rela.analysis.aer import (AlignmentFileError, Gold, alignment_error_rate, read_gold,
                                       read_hypothesis)
from fairseq_rela.analysis.alignment import align, word_ids
from fairseq_rela.analysis.symmetrize import grow_diag_final_and
from tests.conftest import run_cli

SRC = ["a", "b", "c", "</s>"]
TGT = ["A", "B", "C"]


def _matrix(rows):
    return np.array(rows, dtype=float)


def test_awo_reads_the_predicting_row_awi_the_input_row():
    # rows: decoder positions 0..3 (input </s> A B C); row t predicts TGT[t]
    m = _matrix([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]])
    awo, _ = align(m, SRC, TGT, shift=False)
    awi, _ = align(m, SRC, TGT, shift=True)
    assert awo == [(2, 0), (1, 1), (0, 2)]
    assert awi == [(1, 0), (0, 1)]  # row 3 (input C) points at </s>: C is left unaligned


def test_eos_and_null_rows_are_never_aligned():
    m = _matrix([[0, 0, 0, 5], [0, 0, 0, 0], [0.2, 0, 0, 0.1], [0, 0, 0, 0]])
    links, soft = align(m, SRC, TGT)
    assert links == [(0, 2)]
    assert soft.shape == (3, 3)  # </s> column dropped


def test_sentencepiece_merge_sums_source_and_averages_target():
    src = ["\u2581Ros", "in", "en", "\u2581gut", "</s>"]
    tgt = ["\u2581rai", "sins", "\u2581good"]
    assert word_ids(src[:-1], "sentencepiece") == [0, 0, 0, 1]
    m = _matrix([[0.2, 0.2, 0.2, 0.3, 0], [0.0, 0.0, 0.0, 0.9, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]])
    links, soft = align(m, src, tgt, src_style="sentencepiece", tgt_style="sentencepiece")
    # "raisins" = mean of rows 0,1: Rosinen 0.3, gut 0.6 -> gut; with "any" row 0 alone links Rosinen
    np.testing.assert_allclose(soft[0], [0.3, 0.6])
    assert links == [(1, 0), (1, 1)]
    any_links, _ = align(m, src, tgt, src_style="sentencepiece", tgt_style="sentencepiece", rule="any")
    assert any_links == [(1, 0), (1, 1)]
    m[0] = [0.5, 0.1, 0.1, 0.3, 0]
    any_links, _ = align(m, src, tgt, src_style="sentencepiece", tgt_style="sentencepiece", rule="any")
    assert any_links == [(0, 0), (1, 0), (1, 1)]


def test_subword_nmt_merge():
    assert word_ids(["Ros@@", "in@@", "en", "gut"], "subword_nmt") == [0, 0, 0, 1]
    with pytest.raises(ValueError, match="unknown value 'bpe'"):
        word_ids(["x"], "bpe")


def test_aer_hand_computed():
    gold = [Gold(sure={(0, 0), (1, 1)}, possible={(0, 0), (1, 1), (2, 1)})]
    hyp = [{(0, 0), (2, 1), (2, 2)}]
    r = alignment_error_rate(gold, hyp)
    # |A∩S| = 1, |A∩P| = 2, |A| = 3, |S| = 2 -> AER = 1 - 3/5
    assert r.aer == pytest.approx(0.4) and r.precision == pytest.approx(2 / 3) and r.recall == pytest.approx(0.5)


def test_gold_and_hypothesis_index_bases(tmp_path):
    (tmp_path / "gold").write_text("1-1 2p3\n\n")
    (tmp_path / "hyp").write_text("0-0 1-2\n0-0\n")
    gold = read_gold(str(tmp_path / "gold"), base=1)
    assert gold[0].sure == {(0, 0)} and gold[0].possible == {(0, 0), (1, 2)}
    assert read_hypothesis(str(tmp_path / "hyp"), base=0)[0] == {(0, 0), (1, 2)}
    assert read_hypothesis(str(tmp_path / "hyp"), base=0, reverse=True)[0] == {(0, 0), (2, 1)}


def test_fairseq_generate_output_is_read_in_id_order(tmp_path):
    (tmp_path / "gen").write_text("S-1\tx\nA-1\t0-1\nH-0\ty\nA-0\t1-0 0-0\n")
    assert read_hypothesis(str(tmp_path / "gen")) == [{(1, 0), (0, 0)}, {(0, 1)}]
    (tmp_path / "gap").write_text("A-0\t0-0\nA-2\t0-0\n")
    with pytest.raises(AlignmentFileError, match="no A- line for sentence 1"):
        read_hypothesis(str(tmp_path / "gap"))


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


def test_aer_cli_warns_on_a_shifted_index_base_and_prints_json(tmp_path):
    (tmp_path / "gold").write_text("1-1 2-2 3-3\n1-2 2-1\n")
    (tmp_path / "hyp").write_text("1-1 2-2 3-3\n1-2 2-1\n")  # 1-based, read as 0-based
    proc = run_cli("fairseq-rela-aer", "--gold", tmp_path / "gold", "--hyp", tmp_path / "hyp", "--json")
    assert "warning" in proc.stderr and "--hyp-base 1" in proc.stderr
    out = json.loads(proc.stdout)
    assert out["aer"] == pytest.approx(0.6) and out["signature"].startswith("fairseq-rela-aer|gold-base:1|hyp-base:0")
    ok = run_cli("fairseq-rela-aer", "--gold", tmp_path / "gold", "--hyp", tmp_path / "hyp", "--hyp-base", "1")
    assert ok.stdout.startswith("AER 0.0") and not ok.stderr


def test_empty_gold_line_is_a_warning_not_an_error(tmp_path):
    (tmp_path / "gold").write_text("1-1\n\n")
    (tmp_path / "hyp").write_text("0-0\n\n")
    proc = run_cli("fairseq-rela-aer", "--gold", tmp_path / "gold", "--hyp", tmp_path / "hyp")
    assert "gold:2: empty line" in proc.stderr and proc.stdout.startswith("AER 0.0")


def test_grow_diag_final_and():
    fwd = {(0, 0), (1, 1), (3, 4)}
    rev = {(0, 0), (1, 1), (1, 2), (5, 4)}
    # intersection {00, 11}; grow: (1,2) neighbours (1,1) and covers the unaligned target 2;
    # (3,4) and (5,4) touch nothing aligned; final-and: (3,4) first, then (5,4)'s target is taken
    assert grow_diag_final_and(fwd, rev) == {(0, 0), (1, 1), (1, 2), (3, 4)}
    # diagonal growth: a chain of neighbours is followed
    assert grow_diag_final_and({(0, 0), (1, 1), (2, 2)}, {(0, 0)}) == {(0, 0), (1, 1), (2, 2)}
