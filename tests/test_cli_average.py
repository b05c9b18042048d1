"""fairseq-rela-average (cli/average.py) against a hand-computed average, and its bad inputs."""
import re

import pytest
import torch

from tests.helpers import last_error_line, run_cli

pytestmark = pytest.mark.e2e


def _checkpoint(path, seed, updates=0):
    g = torch.Generator().manual_seed(seed)
    model = {"w": torch.randn(3, 4, generator=g), "h": torch.randn(5, generator=g).half(),
             "count": torch.tensor([7, 8])}
    torch.save({"model": model, "extra_state": {"seed": seed}, "optimizer_history": [{"num_updates": updates}]}, path)
    return model


def test_average_against_hand_computed(tmp_path):
    models = [_checkpoint(tmp_path / f"checkpoint_1_{u}.pt", seed, u) for seed, u in ((1, 9), (2, 10), (3, 100))]
    _checkpoint(tmp_path / "checkpoint_1_8.pt", 4, 8)  # older: left out by --last 3
    run_cli("fairseq-rela-average", "--inputs", tmp_path, "--last", "3", "--output", tmp_path / "avg.pt")
    avg = torch.load(tmp_path / "avg.pt", weights_only=True)
    a, b, c = models
    for i in range(3):
        for j in range(4):
            assert abs(avg["model"]["w"][i, j].item() - (a["w"][i, j] + b["w"][i, j] + c["w"][i, j]).item() / 3) < 1e-6
    expected_h = [(float(a["h"][k]) + float(b["h"][k]) + float(c["h"][k])) / 3 for k in range(5)]
    assert avg["model"]["h"].dtype == torch.float16
    assert torch.equal(avg["model"]["h"], torch.tensor(expected_h).half())
    assert torch.equal(avg["model"]["count"], torch.tensor([7, 8]))
    assert avg["extra_state"]["seed"] == 3  # the newest input's other fields (update 100, not 10)

    explicit = run_cli("fairseq-rela-average", "--inputs", tmp_path / "checkpoint_1_9.pt",
                       tmp_path / "checkpoint_1_10.pt", "--output", tmp_path / "two.pt")
    assert "averaged 2 checkpoints" in explicit.stdout
    two = torch.load(tmp_path / "two.pt", weights_only=True)["model"]["w"]
    assert torch.allclose(two, (a["w"] + b["w"]) / 2, atol=1e-6)


def test_average_bad_input(tmp_path):
    _checkpoint(tmp_path / "checkpoint_1_1.pt", 1)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    cases = [
        (["--inputs", tmp_path / "broken.pt", "--output", tmp_path / "o.pt"], "broken.pt: not a torch checkpoint"),
        (["--inputs", tmp_path / "missing.pt", "--output", tmp_path / "o.pt"], "missing.pt: no such checkpoint"),
        (["--inputs", tmp_path, "--last", "5", "--output", tmp_path / "o.pt"], "1 checkpoint_E_U.pt file, --last 5"),
        (["--inputs", tmp_path, "--output", tmp_path / "o.pt"], "needs --last"),
    ]
    for args, message in cases:
        proc = run_cli("fairseq-rela-average", *args, check=False)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / "o.pt").exists()


def _with_options(path, seed, task=None, **model_options):
    """A checkpoint of the shape fairseq writes for a legacy architecture: cfg.model is the whole argparse
    Namespace (model options and every other option), the other groups hold their own options."""
    import argparse

    options = dict(arch="rela_transformer_tiny", _name="rela_transformer_tiny", attention_activation="softmax",
                   encoder_layers=2, dropout=0.1, lr=[0.002], save_dir=f"run{seed}", seed=seed, data="bin", task="translation")
    options.update(model_options)
    cfg = {"model": argparse.Namespace(**options), "common": {"_name": None, "seed": seed},
           "optimization": {"_name": None, "lr": [0.002]}, "checkpoint": {"_name": None, "save_dir": f"run{seed}"},
           "task": dict({"_name": "translation", "data": "bin", "source_lang": "de", "target_lang": "en"}, **(task or {}))}
    g = torch.Generator().manual_seed(seed)
    torch.save({"model": {"w": torch.randn(3, 4, generator=g)}, "cfg": cfg, "args": None}, path)


def test_only_checkpoints_of_the_same_model_are_averaged(tmp_path):
    """Model options must agree (not only shapes): a softmax and a sparsemax checkpoint, a ReLA-family and a stock
    transformer, are one error line naming the option and both values, unless --ignore-option names it; options of
    other groups (seed, learning rate, save dir) do not count."""
    _with_options(tmp_path / "a.pt", 1)
    _with_options(tmp_path / "b.pt", 2)  # another run: other seed and save dir, same model
    _with_options(tmp_path / "sparsemax.pt", 3, attention_activation="sparsemax")
    _with_options(tmp_path / "stock.pt", 4, arch="transformer", _name="transformer", attention_activation=None)
    _with_options(tmp_path / "old.pt", 5, rela_gate_init="ones")  # an option the others do not record
    run_cli("fairseq-rela-average", "--inputs", tmp_path / "a.pt", tmp_path / "b.pt", "--output", tmp_path / "ab.pt")
    for other, option, values in (("sparsemax.pt", "attention_activation", "'sparsemax' but .*a.pt has 'softmax'"),
                                  ("stock.pt", "arch", "'transformer' but .*a.pt has 'rela_transformer_tiny'"),
                                  ("old.pt", "rela_gate_init", "'ones' but .*a.pt has not set")):
        proc = run_cli("fairseq-rela-average", "--inputs", tmp_path / "a.pt", tmp_path / other, "--output",
                       tmp_path / "o.pt", check=False)
        line = last_error_line(proc, "fairseq-rela-average")
        assert re.search(rf"{other}: model option {option} is {values}: only checkpoints of the same model are "
                         rf"averaged \(--ignore-option {option} to average anyway\)$", line), line
        assert not (tmp_path / "o.pt").exists()
    run_cli("fairseq-rela-average", "--inputs", tmp_path / "a.pt", tmp_path / "sparsemax.pt", "--output",
            tmp_path / "o.pt", "--ignore-option", "attention-activation")
    avg = torch.load(tmp_path / "o.pt", weights_only=False)
    assert avg["cfg"]["model"].attention_activation == "sparsemax"  # the newest input's options, as documented
    proc = run_cli("fairseq-rela-average", "--inputs", tmp_path / "a.pt", tmp_path / "b.pt", "--output",
                   tmp_path / "x.pt", "--ignore-option", "activation", check=False)
    assert last_error_line(proc, "fairseq-rela-average").endswith(
        "--ignore-option activation: no input checkpoint has a model or task option of that name")


def test_damaged_inputs_and_unwritable_output_are_one_line(tmp_path):
    """A 0-byte input (an IndexError while formatting the message, before), flipped bytes inside a tensor (CRC),
    a weight of nan or 2e28, an output that is not a regular file (never replaced): one line, no output."""
    import os

    from tests.helpers import damage_tensor_bytes

    _checkpoint(tmp_path / "good.pt", 1)
    (tmp_path / "empty.pt").write_bytes(b"")
    damage_tensor_bytes(tmp_path / "good.pt", tmp_path / "flipped.pt")
    for name, value in (("nan.pt", float("nan")), ("big.pt", 2e28)):
        state = torch.load(tmp_path / "good.pt", weights_only=True)
        state["model"]["w"][1, 2] = value
        torch.save(state, tmp_path / name)
    os.mkfifo(tmp_path / "fifo")
    for inputs, output, message in (
            (["empty.pt"], "o.pt", r"empty\.pt: the file is empty \(0 bytes\)$"),
            (["flipped.pt"], "o.pt", r"flipped\.pt: damaged: \S+/data/\d+ fails its CRC check"),
            (["nan.pt"], "o.pt", r"nan\.pt: w holds nan \(not finite\)"),
            (["big.pt"], "o.pt", r"big\.pt: w holds 2e\+28, beyond"),
            ([], "fifo", r"fifo: exists and is not a regular file")):
        proc = run_cli("fairseq-rela-average", "--inputs", tmp_path / "good.pt", *[tmp_path / i for i in inputs],
                       "--output", tmp_path / output, check=False)
        line = last_error_line(proc, "fairseq-rela-average")
        assert re.search(message, line), line
        assert not (tmp_path / "o.pt").exists()


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """ENOSPC while torch.save writes (torch turns it into a RuntimeError raised while handling the OSError)."""
    import errno
    import io
    import os

    from fairseq_rela.cli import average, files

    _checkpoint(tmp_path / "a.pt", 1)
    _checkpoint(tmp_path / "b.pt", 2)

    class Full(io.FileIO):
        def write(self, data):
            if self.tell() + len(data) > 100:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    monkeypatch.setattr(files, "open", lambda path, mode: Full(path, mode.replace("b", "")), raising=False)
    with pytest.raises(SystemExit) as exit_:
        average.cli_main(["--inputs", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--output", str(tmp_path / "o.pt")])
    assert str(exit_.value) == f"fairseq-rela-average: error: {tmp_path / 'o.pt'}: cannot write (No space left on device)"
    assert sorted(os.listdir(tmp_path)) == ["a.pt", "b.pt"] and capsys.readouterr().out == ""


def _average(capsys, *argv):
    """fairseq-rela-average in-process: (exit message or None, stdout, stderr)."""
    from fairseq_rela.cli import average

    try:
        average.cli_main([str(a) for a in argv])
        code = None
    except SystemExit as exit_:
        code = str(exit_.code)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_language_pair_must_agree_a_moved_data_folder_only_warns(tmp_path, capsys):
    """A de->en and an en->de model (same joined dictionary, same shapes) are one error line; the same pair
    trained from another data path is averaged with a warning."""
    _with_options(tmp_path / "a.pt", 1)
    _with_options(tmp_path / "rev.pt", 2, task={"source_lang": "en", "target_lang": "de", "data": "binrev"})
    _with_options(tmp_path / "moved.pt", 3, task={"data": "/elsewhere/bin"})
    code, out, _ = _average(capsys, "--inputs", tmp_path / "a.pt", tmp_path / "rev.pt", "--output", tmp_path / "o.pt")
    assert code == (f"fairseq-rela-average: error: {tmp_path / 'rev.pt'}: task option source_lang is 'en' but "
                    f"{tmp_path / 'a.pt'} has 'de': only checkpoints of the same model are averaged "
                    "(--ignore-option source_lang to average anyway)") and out == ""
    assert not (tmp_path / "o.pt").exists()
    code, out, err = _average(capsys, "--inputs", tmp_path / "a.pt", tmp_path / "moved.pt", "--output",
                              tmp_path / "o.pt")
    assert code is None and (tmp_path / "o.pt").is_file(), code
    assert "moved.pt was trained on data '/elsewhere/bin'" in err


def test_a_file_listed_twice_is_refused_and_the_summary_shows_paths_as_given(tmp_path, capsys, monkeypatch):
    _checkpoint(tmp_path / "a.pt", 1)
    (tmp_path / "run2").mkdir()
    _checkpoint(tmp_path / "run2" / "a.pt", 2)
    monkeypatch.chdir(tmp_path)
    code, out, _ = _average(capsys, "--inputs", "a.pt", tmp_path / "a.pt", "--output", "o.pt")
    assert code == (f"fairseq-rela-average: error: {tmp_path / 'a.pt'}: listed twice (also as a.pt); each "
                    "checkpoint counts once") and out == "", code
    assert not (tmp_path / "o.pt").exists()
    code, out, _ = _average(capsys, "--inputs", "a.pt", "run2/a.pt", "--output", "o.pt")
    assert code is None and out.strip() == "fairseq-rela-average: averaged 2 checkpoints (a.pt, run2/a.pt) into o.pt"


# ---------------------------------------------------------------- issue 36
def test_an_output_that_is_an_input_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """--output naming an input (the same path, another spelling of it, a symlink to it, a hard link of it)
    would replace that checkpoint with the average: one line, every file as it was."""
    import os

    _checkpoint(tmp_path / "x.pt", 1)
    _checkpoint(tmp_path / "y.pt", 2)
    os.symlink(tmp_path / "x.pt", tmp_path / "link.pt")
    os.link(tmp_path / "y.pt", tmp_path / "hard.pt")
    before = {n: (tmp_path / n).read_bytes() for n in ("x.pt", "y.pt")}
    monkeypatch.chdir(tmp_path)
    for output, which in (("x.pt", "x.pt"), (tmp_path / "sub" / ".." / "y.pt", "y.pt"), ("link.pt", "x.pt"),
                          ("hard.pt", "y.pt")):
        code, out, _ = _average(capsys, "--inputs", "x.pt", "y.pt", "--output", output)
        assert code is not None and code.startswith(f"fairseq-rela-average: error: --output {output} is the input ")
        assert code.endswith("choose another --output") and out == "", code
        assert {n: (tmp_path / n).read_bytes() for n in ("x.pt", "y.pt")} == before, which
    _checkpoint(tmp_path / "checkpoint_1_5.pt", 3)
    code, out, _ = _average(capsys, "--inputs", tmp_path, "--last", "1", "--output", tmp_path / "checkpoint_1_5.pt")
    assert code is not None and "is the input" in code and out == ""


def test_last_picks_a_kind_and_says_which_when_a_folder_holds_both(tmp_path, capsys):
    for u in (10, 20):
        _checkpoint(tmp_path / f"checkpoint_1_{u}.pt", u, u)
    for e in (1, 2, 3):
        _checkpoint(tmp_path / f"checkpoint{e}.pt", 100 + e, 10 * e)
    code, out, _ = _average(capsys, "--inputs", tmp_path, "--last", "3", "--output", tmp_path / "o.pt")
    assert code == (f"fairseq-rela-average: error: {tmp_path}: 2 checkpoint_E_U.pt files, --last 3 asks for 3; it "
                    "also holds 3 checkpointE.pt (--kind epoch)"), code
    code, out, _ = _average(capsys, "--inputs", tmp_path, "--last", "3", "--kind", "epoch", "--output",
                            tmp_path / "o.pt")
    assert code is None and "checkpoint1.pt, " in out and "checkpoint3.pt" in out
    assert torch.load(tmp_path / "o.pt", weights_only=True)["extra_state"]["seed"] == 103
    code, out, err = _average(capsys, "--inputs", tmp_path, "--last", "2", "--output", tmp_path / "o2.pt")
    assert code is None and "checkpoint_1_20.pt" in out and "--kind epoch for the others" in err
    code, _, _ = _average(capsys, "--inputs", tmp_path / "checkpoint1.pt", "--last", "2", "--output", tmp_path / "o3.pt")
    assert code.endswith("checkpoint1.pt: not a directory (--last N takes one save directory as --inputs)"), code
