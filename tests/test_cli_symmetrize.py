"""fairseq-rela-symmetrize: two directions' alignments -> one, through the console script."""
import random

import pytest

from fairseq_rela.alignment.symmetrize import METHODS, grow_diag_final_and
from fairseq_rela.cli.symmetrize import cli_main
from tests.helpers import run_cli

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
def test_agrees_with_the_symmetrize_functions(tmp_path, capsys):
    """Random directional alignments (forward as a fairseq output, backward as 1-based Pharaoh en-de)."""
    rng = random.Random(0)
    fwd, bwd = [], []
    for _ in range(60):
        ns, nt = rng.randint(1, 9), rng.randint(1, 9)
        cells = [(s, t) for s in range(ns) for t in range(nt)]
        fwd.append(set(rng.sample(cells, rng.randint(0, len(cells) // 2))))
        bwd.append(set(rng.sample(cells, rng.randint(0, len(cells) // 2))))
    gen = "".join(f"S-{i}\tx\nA-{i}\t{' '.join(f'{s}-{t}' for s, t in sorted(f))}\n" for i, f in enumerate(fwd))
    pharaoh = "".join(" ".join(f"{t + 1}-{s + 1}" for s, t in sorted(b)) + "\n" for b in bwd)
    args = _files(tmp_path, gen, pharaoh)[:4] + ["--backward-base", "1"]
    for method, function in METHODS.items():
        cli_main(args + ["--method", method])
        got = capsys.readouterr().out.splitlines()
        want = [" ".join(f"{s}-{t}" for s, t in sorted(function(f, b))) for f, b in zip(fwd, bwd)]
        assert got == want
    assert sum(len(grow_diag_final_and(f, b) - (f & b)) for f, b in zip(fwd, bwd)) > 0  # growth happened


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
