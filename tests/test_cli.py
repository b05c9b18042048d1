"""End to end through the stock console scripts with --user-dir, on CPU."""
import re

import pytest
import torch
from fairseq import checkpoint_utils

import fairseq_rela  # noqa: F401  (allow-lists checkpoint globals, registers the model)

from tests.conftest import TRAIN_ARGS, USER_DIR, run_cli

ACTIVATIONS = ["softmax", "rela", "sparsemax", "entmax15"]
GEN_ARGS = ("--user-dir", USER_DIR, "--cpu", "--max-tokens", "4000", "--required-batch-size-multiple", "1")


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_train_and_generate_beam4(toy_data, trained, activation):
    ckpt = trained(activation)
    proc = run_cli("fairseq-generate", toy_data / "bin", "--path", ckpt, "--beam", "4", "--gen-subset", "test", *GEN_ARGS)
    hyps = [line for line in proc.stdout.splitlines() if line.startswith("H-")]
    assert len(hyps) == 41  # every test sentence, none dropped by batch trimming
    bleu = float(re.search(r"BLEU4 = ([\d.]+)", proc.stdout).group(1))
    assert bleu > 30, proc.stdout[-500:]  # the reversal task is learnt by every activation


def _cross_attention(ckpt, toy_data):
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(ckpt)])  # weights_only torch.load
    model = models[0].eval()
    task.load_dataset("valid")
    ds = task.dataset("valid")
    sample = ds.collater([ds[i] for i in range(8)])
    net = sample["net_input"]
    with torch.no_grad():
        enc = model.encoder(net["src_tokens"], src_lengths=net["src_lengths"])
        _, extra = model.decoder(net["prev_output_tokens"], encoder_out=enc, alignment_layer=0)
    real = net["prev_output_tokens"].ne(task.target_dictionary.pad())
    return extra["attn"][0][real]  # (rows, src_len), averaged over heads


def test_rela_cross_attention_is_sparse_and_unnormalised(toy_data, trained):
    rela = _cross_attention(trained("rela"), toy_data)
    assert (rela == 0).any()
    assert not torch.allclose(rela.sum(-1), torch.ones(rela.size(0)), atol=1e-3)
    soft = _cross_attention(trained("softmax"), toy_data)
    torch.testing.assert_close(soft.sum(-1), torch.ones(soft.size(0)))


def test_interactive(toy_data, trained):
    lines = "w1 w2 w3\nw7 w8 w9 w10\n"
    proc = run_cli("fairseq-interactive", toy_data / "bin", "--path", trained("rela"), "--beam", "4",
                   "--source-lang", "src", "--target-lang", "tgt", "--user-dir", USER_DIR, "--cpu", input=lines)
    hyps = [line.split("\t")[2] for line in proc.stdout.splitlines() if line.startswith("H-")]
    assert hyps[0] == "W3 W2 W1" and len(hyps) == 2


def test_resume_training_from_checkpoint(toy_data, tmp_path):
    common = (toy_data / "bin", "--user-dir", USER_DIR, *TRAIN_ARGS, "--attention-activation", "rela",
              "--rela-variant", "i", "--save-dir", tmp_path)
    run_cli("fairseq-train", *common, "--max-epoch", "1")
    proc = run_cli("fairseq-train", *common, "--max-epoch", "2")
    log = proc.stdout + proc.stderr
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch 2 @ \d+ updates\)", log)  # resumes at epoch 2
    assert re.search(r"end of epoch 2", log)


@pytest.mark.parametrize("args,message", [
    (("--attention-activation", "relu"), "argument --attention-activation: invalid choice: 'relu'"),
    (("--attention-activation", "softmax", "--rela-norm", "layer"),
     "rela_transformer: error: --rela-norm applies only to --attention-activation rela"),
    (("--rela-variant", "i", "--rela-gate-init", "ones"),
     "rela_transformer: error: --rela-gate-init applies only to ReLA-g"),
    (("--attention-activation-in", "decoder"), "--attention-activation-in: unknown value 'decoder'; use a comma-separated subset"),
])
def test_bad_options_fail_in_one_line(toy_data, tmp_path, args, message):
    proc = run_cli("fairseq-train", toy_data / "bin", "--user-dir", USER_DIR, *TRAIN_ARGS, "--max-epoch", "1",
                   "--save-dir", tmp_path, *args, check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert message in last and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written
