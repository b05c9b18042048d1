"""Stock fairseq translation Transformers as rela_transformer softmax models, and stock roberta masked LMs
with our softmax attention (models/conversion.py): the converted model computes exactly what the stock one
does (full forward, incremental decoding, beam search; MLM logits, features, classification heads), keeps
its device, dtype and mode, leaves it untouched; models without attention we can analyse are refused
in one line; and (e2e) a checkpoint trained by the stock fairseq-train is analysed by fairseq-rela-analyze
and aligned by fairseq-generate --task translation_alignment like the same weights loaded as rela_transformer."""
import argparse
import json
import re

import pytest
import torch
from fairseq import options, tasks
from fairseq.models.roberta.model import RobertaModel
from fairseq.models.transformer import TransformerModel
from fairseq.models.transformer_align import TransformerAlignModel
from fairseq.sequence_generator import SequenceGenerator

import fairseq_rela.models  # noqa: F401  (registers rela_transformer)
from fairseq_rela.attention import ReLAMultiheadAttention
from fairseq_rela.models.conversion import UnsupportedModelError, as_analysable, as_rela_roberta, as_rela_transformer
from fairseq_rela.models.rela_roberta import RelaRobertaModel
from fairseq_rela.models.rela_transformer import RelaTransformerModel
from tests.helpers import TRAIN_ARGS, USER_DIR, batch, build, build_mlm, last_error_line, run_cli

TINY = ("--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128", "--encoder-layers", "2",
        "--encoder-attention-heads", "4", "--decoder-embed-dim", "64", "--decoder-ffn-embed-dim", "128",
        "--decoder-layers", "2", "--decoder-attention-heads", "4")
STOCK = {  # id -> (class, command-line options): the stock models that convert
    "transformer": (TransformerModel, ("--arch", "transformer", *TINY)),
    "transformer-prenorm-shared": (TransformerModel, ("--arch", "transformer", *TINY, "--encoder-normalize-before",
                                                      "--decoder-normalize-before",
                                                      "--share-decoder-input-output-embed")),
    "transformer_iwslt_de_en": (TransformerModel, ("--arch", "transformer_iwslt_de_en", *TINY)),
    "transformer_align": (TransformerAlignModel, ("--arch", "transformer_align", *TINY, "--alignment-layer", "1")),
    "transformer_align-full-context": (TransformerAlignModel, ("--arch", "transformer_align", *TINY,
                                                               "--alignment-layer", "0", "--alignment-heads", "2",
                                                               "--full-context-alignment")),
}
assert TRAIN_ARGS[:2] == ("--arch", "rela_transformer_tiny")
TRAIN = TRAIN_ARGS[2:]  # the test suite's training options, without its architecture


def _stock(toy_data, name):
    cls, args = STOCK[name]
    task, model = build(toy_data, *args)
    assert type(model) is cls
    return task, model


def _randomise(model):
    """Non-trivial weights everywhere (biases and LayerNorms are 0/1 at init), seeded."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


@pytest.mark.unit
@pytest.mark.parametrize("name", list(STOCK))
def test_converted_model_computes_what_the_stock_model_does(toy_data, name):
    task, stock = _stock(toy_data, name)
    _randomise(stock)
    before = {k: v.clone() for k, v in stock.state_dict().items()}
    rng = torch.get_rng_state()
    rela = as_rela_transformer(stock)
    assert torch.equal(torch.get_rng_state(), rng)  # building the new model did not move the caller's RNG
    assert type(rela) is RelaTransformerModel and type(stock) is STOCK[name][0]
    mods = [m for m in rela.modules() if isinstance(m, ReLAMultiheadAttention)]
    assert len(mods) == 6 and {m.activation for m in mods} == {"softmax"}
    assert rela.args.attention_activation == "softmax"
    assert not any(isinstance(m, ReLAMultiheadAttention) for m in stock.modules())  # the stock model is untouched
    assert stock.state_dict().keys() == rela.state_dict().keys()
    for k, v in rela.state_dict().items():
        assert torch.equal(v, before[k]) and torch.equal(stock.state_dict()[k], before[k]), k
    net = batch(task)["net_input"]
    with torch.no_grad():
        expected, extra = stock(**net)
        got, got_extra = rela(**net)
        if isinstance(stock, TransformerAlignModel):  # its alignment options chose the cross-attention it returns
            encoder_out = rela.encoder(net["src_tokens"], src_lengths=net["src_lengths"])
            _, got_extra = rela.decoder(net["prev_output_tokens"], encoder_out=encoder_out,
                                        alignment_layer=stock.alignment_layer, alignment_heads=stock.alignment_heads,
                                        full_context_alignment=stock.full_context_alignment)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert got.shape == expected.shape
    # the same cross-attention weights (B, T, S) as the stock model's extra["attn"]
    assert got_extra["attn"][0].shape == (*net["prev_output_tokens"].shape, net["src_tokens"].size(1))
    torch.testing.assert_close(got_extra["attn"][0], extra["attn"][0], atol=1e-5, rtol=0)


@pytest.mark.unit
def test_device_dtype_and_mode_are_kept(toy_data):
    _, stock = _stock(toy_data, "transformer")
    assert not as_rela_transformer(stock).training
    rela = as_rela_transformer(stock.train())
    assert rela.training
    half = as_rela_transformer(stock.eval().half())
    assert not half.training and {p.dtype for p in half.parameters()} == {torch.float16}
    assert {p.device.type for p in half.parameters()} == {"cpu"}
    assert as_rela_transformer(rela) is rela  # a rela_transformer is used as it is


@pytest.mark.e2e  # steps the decoder token by token: too slow for unit on a loaded CPU
@pytest.mark.parametrize("name", ["transformer", "transformer_align-full-context"])
def test_incremental_decoding_equals_the_stock_model(toy_data, name):
    task, stock = _stock(toy_data, name)
    _randomise(stock)
    rela = as_rela_transformer(stock)
    net = batch(task)["net_input"]
    prev = net["prev_output_tokens"]
    real = prev.ne(task.target_dictionary.pad())
    with torch.no_grad():
        full, _ = stock(**net)  # (transformer_align's forward_decoder never decodes incrementally)
        enc = rela.encoder(net["src_tokens"], src_lengths=net["src_lengths"])
        state, steps = {}, []
        for t in range(prev.size(1)):
            steps.append(rela.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)[0])
    torch.testing.assert_close(torch.cat(steps, 1)[real], full[real], atol=1e-5, rtol=0)


@pytest.mark.e2e  # beam searches: too slow for unit
@pytest.mark.parametrize("name", ["transformer", "transformer_align"])
def test_beam_search_equals_the_stock_model(toy_data, name):
    task, stock = _stock(toy_data, name)
    _randomise(stock)
    rela = as_rela_transformer(stock)
    sample = batch(task, 6)
    outs = []
    for model in (stock, rela):
        gen = SequenceGenerator([model], task.target_dictionary, beam_size=4, max_len_b=12)
        with torch.no_grad():
            outs.append(gen.generate([model], sample))
    for expected, got in zip(*outs):
        assert len(expected) == len(got) == 4
        for e, g in zip(expected, got):
            assert torch.equal(e["tokens"], g["tokens"])
            torch.testing.assert_close(g["positional_scores"], e["positional_scores"], atol=1e-5, rtol=0)


def _language_model(toy_data, tmp_path):
    (tmp_path / "dict.txt").write_text((toy_data / "bin" / "dict.tgt.txt").read_text())
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(tmp_path), "--task", "language_modeling", "--arch", "transformer_lm",
                                                "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
                                                "--decoder-layers", "1", "--decoder-attention-heads", "2", "--cpu"])
    return tasks.setup_task(args).build_model(args)


@pytest.mark.unit
def test_models_without_attention_we_can_analyse_are_refused(toy_data, tmp_path):
    _, lstm = build(toy_data, "--arch", "lstm", "--encoder-embed-dim", "32", "--encoder-hidden-size", "32",
                    "--decoder-embed-dim", "32", "--decoder-hidden-size", "32", "--decoder-out-embed-dim", "32")
    lm = _language_model(toy_data, tmp_path)
    for model, name in ((lstm, r"lstm \(LSTMModel\)"), (lm, r"transformer_lm \(TransformerLanguageModel\)")):
        with pytest.raises(UnsupportedModelError) as err:
            as_rela_transformer(model)
        message = str(err.value)
        assert re.fullmatch(rf"the model is {name}: fairseq-rela analyses only rela_transformer, transformer "
                            r"\(--arch transformer\*\) and transformer_align translation models", message), message


MASKED_LMS = {"roberta": (), "roberta-prenorm": ("--encoder-normalize-before",)}


@pytest.mark.unit
@pytest.mark.parametrize("name", list(MASKED_LMS))
def test_converted_roberta_computes_what_the_stock_model_does(mlm_data, name):
    task, stock = build_mlm(mlm_data, *MASKED_LMS[name])
    assert type(stock) is RobertaModel
    stock.register_classification_head("nli", num_classes=3)
    _randomise(stock)
    before = {k: v.clone() for k, v in stock.state_dict().items()}
    rela = as_rela_roberta(stock)
    assert type(rela) is RelaRobertaModel and not rela.training
    attentions = [m for m in rela.modules() if isinstance(m, ReLAMultiheadAttention)]
    assert [m.kind for m in attentions] == ["encoder_self", "encoder_self"]
    assert not any(isinstance(m, ReLAMultiheadAttention) for m in stock.modules())  # the stock model is untouched
    assert rela.args.attention_activation == "softmax" and rela.args.converted_from == "roberta_base (RobertaModel)"
    after = rela.state_dict()
    assert list(after) == list(before)  # same names (loaded with strict=True), same values
    assert all(torch.equal(after[k], v) for k, v in before.items())
    net_input = batch(task)["net_input"]  # masked input (<mask> tokens), as in training
    with torch.no_grad():
        for kwargs in ({}, {"features_only": True}, {"features_only": True, "return_all_hiddens": True},
                       {"classification_head_name": "nli"}):
            out, extra = stock(**net_input, **kwargs)
            ours, our_extra = rela(**net_input, **kwargs)
            torch.testing.assert_close(ours, out, atol=1e-5, rtol=1e-5)
            for theirs, mine in zip(extra["inner_states"] or [], our_extra["inner_states"] or []):
                torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(stock.state_dict()[k], v) for k, v in before.items())
    assert as_rela_roberta(rela) is rela and as_analysable(rela) is rela
    assert type(as_analysable(stock.train())) is RelaRobertaModel and as_analysable(stock).training


@pytest.mark.unit
def test_masked_lms_we_cannot_analyse_are_refused(mlm_data, toy_data):
    _, legacy = build_mlm(mlm_data, "--arch", "masked_lm")  # the legacy TransformerSentenceEncoder model
    _, translation = _stock(toy_data, "transformer")
    for convert, model, message in (
            (as_analysable, legacy, r"the model is masked_lm \(MaskedLMModel\): fairseq-rela analyses only rela_transformer, "
             r"transformer \(--arch transformer\*\) and transformer_align translation models, and roberta masked LMs"),
            (as_rela_roberta, translation, r"the model is transformer \(TransformerModel\): fairseq-rela analyses only "
             r"roberta masked LMs"),
            (as_rela_transformer, build_mlm(mlm_data)[1], r"the model is roberta_base \(RobertaModel\): fairseq-rela "
             r"analyses only rela_transformer, transformer \(--arch transformer\*\) and transformer_align translation "
             r"models")):
        with pytest.raises(UnsupportedModelError) as err:
            convert(model)
        assert re.fullmatch(message, str(err.value)), str(err.value)


# --- end to end: a checkpoint of the stock fairseq-train --------------------------------------------------------

@pytest.fixture(scope="module")
def stock_ckpt(toy_data, tmp_path_factory):
    save = tmp_path_factory.mktemp("stock-transformer")
    run_cli("fairseq-train", toy_data / "bin", "--arch", "transformer", *TINY, *TRAIN, "--max-update", "30",
            "--save-dir", save)  # stock fairseq: no --user-dir
    return save / "checkpoint_last.pt"


@pytest.fixture(scope="module")
def as_rela_ckpt(stock_ckpt, tmp_path_factory):
    """The same file with its model options saying rela_transformer softmax: loaded by fairseq's own
    checkpoint loader (strict), an independent path to the same model."""
    state = torch.load(stock_ckpt, map_location="cpu", weights_only=False)
    model_cfg = state["cfg"]["model"]
    assert isinstance(model_cfg, argparse.Namespace) and model_cfg.arch == "transformer"
    model_cfg.arch = model_cfg._name = "rela_transformer"
    model_cfg.attention_activation = "softmax"
    path = tmp_path_factory.mktemp("as-rela") / "checkpoint.pt"
    torch.save(state, path)
    return path


def _generate(toy_data, ckpt, *args, task="translation_alignment"):
    return run_cli("fairseq-generate", toy_data / "bin", "--user-dir", USER_DIR, "--task", task, "--path", ckpt,
                   "--cpu", "--gen-subset", "test", "--max-tokens", "300", "--required-batch-size-multiple", "1",
                   *args).stdout


def _lines(out, prefix):
    return sorted(line for line in out.splitlines() if line.startswith(prefix))


@pytest.mark.e2e
@pytest.mark.parametrize("args", [("--alignment-source", "norms", "--alignment-layer", "1", "--alignment-shift"),
                                  ("--alignment-source", "weights", "--alignment-layer", "0", "--alignment-heads", "1,3")])
def test_generate_aligns_a_stock_checkpoint_like_the_same_weights_as_rela_transformer(
        toy_data, stock_ckpt, as_rela_ckpt, args):
    stock = _generate(toy_data, stock_ckpt, "--print-alignment", "--score-reference", *args)
    rela = _generate(toy_data, as_rela_ckpt, "--print-alignment", "--score-reference", *args)
    assert len(_lines(stock, "A-")) == 41
    assert _lines(stock, "A-") == _lines(rela, "A-")
    assert _lines(stock, "H-") == _lines(rela, "H-")
    # the scores of the reference equal those of fairseq-generate with the stock task and model (--user-dir
    # only allow-lists the checkpoint's globals for torch.load)
    plain = _generate(toy_data, stock_ckpt, "--score-reference", task="translation")
    scores = lambda out: {line.split("\t")[0]: [float(x) for x in line.split("\t")[1].split()]  # noqa: E731
                          for line in _lines(out, "P-")}
    expected, got = scores(plain), scores(stock)
    assert expected.keys() == got.keys() and len(got) == 41
    for key in got:
        assert got[key] == pytest.approx(expected[key], abs=1e-4), key


@pytest.mark.e2e
def test_beam_search_alignments_of_a_stock_checkpoint(toy_data, stock_ckpt, as_rela_ckpt):
    args = ("--print-alignment", "--beam", "4", "--alignment-layer", "1")
    stock, rela = _generate(toy_data, stock_ckpt, *args), _generate(toy_data, as_rela_ckpt, *args)
    assert len(_lines(stock, "A-")) == 41
    assert _lines(stock, "A-") == _lines(rela, "A-") and _lines(stock, "H-") == _lines(rela, "H-")


def _flatten(tree, prefix=""):
    """Nested dicts and lists of numbers -> {"a/b/0": number}."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else None
    if items is None:
        return {prefix: tree}
    return {k: v for key, value in items for k, v in _flatten(value, f"{prefix}/{key}").items()}


@pytest.mark.e2e
def test_analyze_a_stock_checkpoint(toy_data, stock_ckpt, as_rela_ckpt, tmp_path):
    results = []
    for name, ckpt in (("stock", stock_ckpt), ("rela", as_rela_ckpt)):
        proc = run_cli("fairseq-rela-analyze", toy_data / "bin", "--path", ckpt, "--gen-subset", "test", "--user-dir",
                       USER_DIR, "--output-dir", tmp_path / name, "--cpu", "--no-progress-bar", "--no-plots")
        assert "sparsity" in proc.stdout
        results.append(json.loads((tmp_path / name / "stats.json").read_text()))
    stock, rela = results
    assert stock["sentences"] == 41 and stock["attention_activation"] == "softmax"
    assert set(stock["attention"]) == {"encoder_self", "decoder_self", "cross"}
    flat_stock, flat_rela = _flatten(stock["attention"]), _flatten(rela["attention"])
    assert flat_stock.keys() == flat_rela.keys() and len(flat_stock) > 100
    for key, value in flat_stock.items():
        assert value == pytest.approx(flat_rela[key], abs=1e-5), key
    assert stock["attention"]["cross"]["1"]["sparsity_mean"] == 0  # softmax: no exact zeros


@pytest.fixture(scope="module")
def lstm_ckpt(toy_data, tmp_path_factory):
    save = tmp_path_factory.mktemp("stock-lstm")
    run_cli("fairseq-train", toy_data / "bin", "--arch", "lstm", "--encoder-embed-dim", "32", "--encoder-hidden-size",
            "32", "--decoder-embed-dim", "32", "--decoder-hidden-size", "32", "--decoder-out-embed-dim", "32", *TRAIN,
            "--max-update", "2", "--save-dir", save)
    return save / "checkpoint_last.pt"


LSTM_REFUSED = (r"the model is lstm \(LSTMModel\): fairseq-rela analyses only rela_transformer, transformer "
                r"\(--arch transformer\*\) and transformer_align translation models")


@pytest.mark.e2e
def test_an_lstm_checkpoint_is_refused_in_one_line(toy_data, lstm_ckpt, tmp_path):
    proc = run_cli("fairseq-rela-analyze", toy_data / "bin", "--path", lstm_ckpt, "--gen-subset", "test", "--user-dir",
                   USER_DIR, "--output-dir", tmp_path / "out", "--cpu", "--no-progress-bar", check=False)
    line = last_error_line(proc, "fairseq-rela-analyze")
    assert re.search(rf"--path .*checkpoint_last\.pt: {LSTM_REFUSED}, and roberta masked LMs$", line), line
    assert not list(tmp_path.iterdir())  # no output folder, no staging folder
    for mode in ("--score-reference", "--beam=2"):
        proc = run_cli("fairseq-generate", toy_data / "bin", "--user-dir", USER_DIR, "--task", "translation_alignment",
                       "--path", lstm_ckpt, "--print-alignment", mode, "--cpu", "--gen-subset", "test", check=False)
        line = last_error_line(proc, "fairseq-generate")
        assert re.search(rf"--task translation_alignment --print-alignment: {LSTM_REFUSED}$", line), line
        assert "A-" not in proc.stdout
