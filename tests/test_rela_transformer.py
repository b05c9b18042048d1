"""The rela_transformer model and its archs (models/): every attention uses the chosen activation,
incremental decoding and beam search equal a full forward, beam-shared encoder states; and (e2e) trained
through the stock console scripts with --user-dir on CPU: train, generate, interactive, resume, bad options."""
import copy
import pickle
import re
import sys

import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.sequence_generator import SequenceGenerator

import fairseq_rela.models  # noqa: F401  (registers rela_transformer, allow-lists checkpoint globals)
from fairseq_rela.attention import ReLAMultiheadAttention
from tests.helpers import TRAIN_ARGS, USER_DIR, batch, build, run_cli

ACTIVATIONS = ["softmax", "rela", "sparsemax", "entmax15"]
GEN_ARGS = ("--user-dir", USER_DIR, "--cpu", "--max-tokens", "4000", "--required-batch-size-multiple", "1")


@pytest.mark.unit
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_attention_uses_the_activation(toy_data, activation):
    _, model = build(toy_data, "--attention-activation", activation)
    mods = [m for m in model.modules() if isinstance(m, ReLAMultiheadAttention)]
    assert len(mods) == 2 + 2 * 2  # encoder self + decoder self and cross, 2 layers each
    assert {m.activation for m in mods} == {activation}
    assert {m.kind for m in mods} == {"encoder_self", "decoder_self", "cross"}


@pytest.mark.unit
def test_activation_in_selects_attention_kinds(toy_data):
    _, model = build(toy_data, "--attention-activation", "rela", "--attention-activation-in", "cross")
    acts = {m.kind: m.activation for m in model.modules() if isinstance(m, ReLAMultiheadAttention)}
    assert acts == {"encoder_self": "softmax", "decoder_self": "softmax", "cross": "rela"}


@pytest.mark.unit
def test_transformer_options_still_apply(toy_data):
    _, model = build(toy_data, "--encoder-normalize-before", "--decoder-normalize-before",
                     "--share-decoder-input-output-embed", "--encoder-layers", "3")
    assert len(model.encoder.layers) == 3 and model.encoder.layers[0].normalize_before
    assert model.decoder.output_projection.weight is model.decoder.embed_tokens.weight


@pytest.mark.e2e  # steps the decoder token by token: too slow for unit on a loaded CPU
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_incremental_decoding_equals_full_forward(toy_data, activation):
    task, model = build(toy_data, "--attention-activation", activation)
    sample = batch(task)
    net = sample["net_input"]
    enc = model.encoder(net["src_tokens"], src_lengths=net["src_lengths"])
    full, _ = model.decoder(net["prev_output_tokens"], encoder_out=enc)
    state, steps = {}, []
    for t in range(net["prev_output_tokens"].size(1)):
        out, _ = model.decoder(net["prev_output_tokens"][:, : t + 1], encoder_out=enc, incremental_state=state)
        steps.append(out)
    real = net["prev_output_tokens"].ne(task.target_dictionary.pad())  # padded steps are never decoded
    torch.testing.assert_close(torch.cat(steps, 1)[real], full[real], atol=1e-4, rtol=1e-4)


@pytest.mark.e2e  # beam searches of an untrained model: too slow for unit
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_beam_search_scores_equal_full_forward_scores(toy_data, activation):
    """Beam search (reordered, beam-shared incremental states) scores what a full forward scores."""
    task, model = build(toy_data, "--attention-activation", activation)
    sample = batch(task, 4)
    gen = SequenceGenerator([model], task.target_dictionary, beam_size=4, max_len_b=12)
    hypos = gen.generate([model], sample)
    for i, nbest in enumerate(hypos):
        for hypo in nbest[:2]:
            tokens = hypo["tokens"].unsqueeze(0)
            prev = torch.cat([tokens.new_full((1, 1), task.target_dictionary.eos()), tokens[:, :-1]], 1)
            src = sample["net_input"]["src_tokens"][i : i + 1]
            src = src[:, src[0].ne(task.source_dictionary.pad())]
            out = model(src, torch.tensor([src.size(1)]), prev)
            lprobs = model.get_normalized_probs(out, log_probs=True)[0]
            expected = lprobs.gather(1, tokens[0].unsqueeze(1)).squeeze(1)
            torch.testing.assert_close(hypo["positional_scores"], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.e2e  # beam searches of an untrained model: too slow for unit
@pytest.mark.parametrize("activation", ["rela", "softmax"])
def test_fairseq_generate_shares_encoder_states_across_the_beam(toy_data, activation):
    """The generator fairseq-generate builds (task.build_generator) reaches the decoder's
    set_beam_size: cross-attention keys are projected once per sentence, and the hypotheses are
    identical to those of the unshared path."""
    from fairseq.options import get_generation_parser, parse_args_and_arch

    task, model = build(toy_data, "--attention-activation", activation)
    gen_args = parse_args_and_arch(get_generation_parser(), [str(toy_data / "bin"), "--user-dir", USER_DIR,
                                                            "--beam", "5", "--cpu"])
    sample = batch(task, 6)
    kv_batch = []
    cross = [m for m in model.modules() if isinstance(m, ReLAMultiheadAttention) and m.kind == "cross"]

    def spy(module, weights, values, *rest):
        kv_batch.append(values.size(0))

    def run():
        kv_batch.clear()
        for m in cross:
            m.recorder = spy
        try:
            with torch.no_grad():
                return task.inference_step(generator, [model], sample)
        finally:
            for m in cross:
                m.recorder = None

    generator = task.build_generator([model], gen_args)
    assert all(m.beam_size == 5 for m in cross)
    shared = run()
    assert set(kv_batch) == {6}  # 6 sentences' keys, not 30 beam copies
    model.decoder.set_beam_size(1)
    unshared = run()
    assert set(kv_batch) == {30}
    for a, b in zip(shared, unshared):
        for ha, hb in zip(a, b):
            assert torch.equal(ha["tokens"], hb["tokens"])
            torch.testing.assert_close(ha["positional_scores"], hb["positional_scores"], atol=1e-4, rtol=1e-4)


@pytest.mark.unit
def test_stale_beam_size_never_folds_unrelated_sentences(toy_data):
    """After beam search, the same model scores a batch of different sentences unchanged."""
    task, model = build(toy_data)
    sample = batch(task, 5)
    net = sample["net_input"]
    with torch.no_grad():
        first = net["prev_output_tokens"][:, :1]
        encoder_out = model.encoder(net["src_tokens"], net["src_lengths"])
        ref, _ = model.decoder(first, encoder_out, incremental_state={})
        model.set_beam_size(5)  # 5 different sentences: nothing to share
        out, _ = model.decoder(first, encoder_out, incremental_state={})
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.e2e  # beam searches of an untrained model: too slow for unit
def test_stale_beam_size_leaves_a_beam1_search_unchanged(toy_data):
    """A beam-1 search after a beam-5 one (set_beam_size stays 5) finds what a fresh model finds."""
    task, model = build(toy_data)
    sample = batch(task, 5)
    gen1 = SequenceGenerator([model], task.target_dictionary, beam_size=1, max_len_b=12)
    with torch.no_grad():
        fresh = gen1.generate([model], sample)
        SequenceGenerator([model], task.target_dictionary, beam_size=5, max_len_b=12).generate([model], sample)
        stale = gen1.generate([model], sample)
    for a, b in zip(fresh, stale):
        assert torch.equal(a[0]["tokens"], b[0]["tokens"])
        torch.testing.assert_close(a[0]["positional_scores"], b[0]["positional_scores"])


@pytest.mark.e2e
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


@pytest.mark.e2e
def test_rela_cross_attention_is_sparse_and_unnormalised(toy_data, trained):
    rela = _cross_attention(trained("rela"), toy_data)
    assert (rela == 0).any()
    assert not torch.allclose(rela.sum(-1), torch.ones(rela.size(0)), atol=1e-3)
    soft = _cross_attention(trained("softmax"), toy_data)
    torch.testing.assert_close(soft.sum(-1), torch.ones(soft.size(0)))


@pytest.mark.e2e
def test_interactive(toy_data, trained):
    lines = "w1 w2 w3\nw7 w8 w9 w10\n"
    proc = run_cli("fairseq-interactive", toy_data / "bin", "--path", trained("rela"), "--beam", "4",
                   "--source-lang", "src", "--target-lang", "tgt", "--user-dir", USER_DIR, "--cpu", input=lines)
    hyps = [line.split("\t")[2] for line in proc.stdout.splitlines() if line.startswith("H-")]
    assert hyps[0] == "W3 W2 W1" and len(hyps) == 2


@pytest.mark.e2e
def test_resume_training_from_checkpoint(toy_data, tmp_path):
    common = (toy_data / "bin", "--user-dir", USER_DIR, *TRAIN_ARGS, "--attention-activation", "rela",
              "--rela-variant", "i", "--save-dir", tmp_path)
    run_cli("fairseq-train", *common, "--max-epoch", "1")
    proc = run_cli("fairseq-train", *common, "--max-epoch", "2")
    log = proc.stdout + proc.stderr
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch 2 @ \d+ updates\)", log)  # resumes at epoch 2
    assert re.search(r"end of epoch 2", log)


@pytest.mark.e2e
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


@pytest.mark.unit
def test_beam_shared_reorder_drops_finished_sentences(toy_data):
    """fairseq's SequenceGenerator drops a finished sentence's beams from the batch (its ``reorder_state``
    indexes the old hypotheses of the sentences kept); the beam-shared cross-attention state, one entry per
    sentence, must then keep the right sentences' keys.  Sentences finish at different steps here (the
    untrained model's EOS logit scaled up); the search equals the one without beam sharing."""
    task, model = build(toy_data, "--attention-activation", "softmax")
    with torch.no_grad():  # EOS likely enough that sentences end at different steps
        model.decoder.output_projection.weight[task.target_dictionary.eos()] *= 2
    sample, beam = batch(task, 6), 4
    cross = [m for m in model.modules() if isinstance(m, ReLAMultiheadAttention) and m.kind == "cross"]
    kv_batch = []

    def search():
        kv_batch.clear()
        for m in cross:
            m.recorder = lambda module, weights, values, *rest: kv_batch.append(values.size(0))
        try:
            with torch.no_grad():
                return generator.generate([model], sample)
        finally:
            for m in cross:
                m.recorder = None

    generator = SequenceGenerator([model], task.target_dictionary, beam_size=beam, max_len_b=10)
    shared, shared_kv = search(), kv_batch[:: len(cross)]
    model.decoder.set_beam_size(1)
    unshared, unshared_kv = search(), kv_batch[:: len(cross)]
    # the scenario: sentences dropped at two different steps while others go on
    assert shared_kv[0] == 6 and len(set(shared_kv)) >= 3 and shared_kv[-1] > 0, shared_kv
    assert unshared_kv == [beam * n for n in shared_kv]  # the same search, keys copied per hypothesis
    lengths = {len(h["tokens"]) for nbest in shared for h in nbest}
    assert len(lengths) > 2
    for a, b in zip(shared, unshared):
        assert len(a) == len(b) == beam
        for ha, hb in zip(a, b):
            assert torch.equal(ha["tokens"], hb["tokens"])
            torch.testing.assert_close(ha["positional_scores"], hb["positional_scores"], atol=1e-5, rtol=1e-5)


@pytest.mark.unit
@pytest.mark.parametrize("source", ["weights", "norms", "block"])
def test_decoder_reports_the_chosen_matrix_only_inside_reporting(toy_data, source):
    """Inside decoder.reporting(source) every forward call's extra["attn"] is that call's matrix of the
    chosen layer (negative: from the top); after it, the stock attention (last layer's mean weights) again."""
    from fairseq_rela.recording import AlignmentSource, AttentionRecorder

    task, model = build(toy_data, "--attention-activation", "rela")
    first, second = batch(task, 3)["net_input"], batch(task, 5)["net_input"]
    with torch.no_grad():
        _, stock = model(**first)
        expected = []
        for net in (first, second):
            rec = AttentionRecorder(model, kinds=("cross",), layers=[0], block=True)
            with rec:
                model(**net)
            expected.append(rec.records[("cross", 0)][0].matrix(source))
        with model.decoder.reporting(AlignmentSource(source, layer=-2)):
            reported = [model(**net)[1]["attn"][0] for net in (first, second)]
        _, after = model(**first)
    for got, want in zip(reported, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(reported[0], stock["attn"][0], atol=1e-3)
    torch.testing.assert_close(after["attn"][0], stock["attn"][0])


@pytest.mark.unit
def test_stock_cli_error_is_one_line_under_the_programs_name(monkeypatch):
    """The error the model and tasks raise under stock fairseq CLIs: a SystemExit (one line, no traceback) that
    library callers can catch by name and read."""
    from fairseq_rela.errors import StockCliError

    monkeypatch.setattr(sys, "argv", ["/usr/bin/fairseq-train", "data"])
    err = StockCliError("--rela-norm: bad")
    assert isinstance(err, SystemExit) and err.message == "--rela-norm: bad"
    assert err.code == "fairseq-train: error: --rela-norm: bad"
    assert StockCliError("x", prog="rela_transformer").code == "rela_transformer: error: x"
    assert copy.deepcopy(err).code == err.code and pickle.loads(pickle.dumps(err)).code == err.code
