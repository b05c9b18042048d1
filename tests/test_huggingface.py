"""Hugging Face BERT/RoBERTa folders converted to fairseq roberta checkpoints (models/huggingface.py): the
converted model computes the HF model's function, checked against the HF model itself (``transformers``, the
independent reference): every layer's hidden states, attention weights and MLM logits on padded batches
(≤ 1e-5, fp32), for tiny random BertModel, BertForMaskedLM, RobertaModel and RobertaForMaskedLM saved
offline; the norm decomposition and ALTI still sum to the outputs; anything else is refused in one line."""
import json
import os
import shutil

import pytest
import torch

import transformers  # the reference (a test dependency: scripts/install.sh)

from fairseq_rela.analysis.runner import load_checkpoint
from fairseq_rela.analysis.statistics import frequent_tokens
from fairseq_rela.attention import ReLAMultiheadAttention
from fairseq_rela.models.huggingface import HFConversionError, convert, read_folder
from fairseq_rela.recording import AttentionRecorder

pytestmark = pytest.mark.unit

# specials deliberately not first, so that the dictionary permutes the embedding rows
BERT_VOCAB = ["[unused0]", "[PAD]", "the", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "!", "a", "man", "dog",
              "runs", "##s", "in", "park", "hat", "green", "##ing", "walk", "big", "small", "red", "sees", "with"]
TEXT = ["A man walks in the park.", "The big red dog runs, sees a small man!", "dogs walking"]
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=40, hidden_act="gelu")
FAIRSEQ_NAME = {"[CLS]": "<s>", "[SEP]": "</s>", "[PAD]": "<pad>", "[UNK]": "<unk>", "[MASK]": "<mask>"}


def _perturb(model, seed):
    """Random weights of a visible size everywhere (LayerNorm gains around 1), tied weights staying tied."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.2 * noise if name.endswith("LayerNorm.weight") or name.endswith("layer_norm.weight")
                    else 0.05 * noise)


def _roberta_tokenizer(folder):
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(TEXT * 5, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.save(os.path.join(folder, "tokenizer.json"))
    return tok.get_vocab_size()


def make_folder(path, architecture, seed=0, bin_file=False, **config):
    """A tiny random HF folder of ``architecture`` (config.json, weights, tokenizer), saved offline."""
    os.makedirs(path, exist_ok=True)
    bert = architecture.startswith("Bert")
    if bert:
        with open(os.path.join(path, "vocab.txt"), "w") as f:
            f.write("\n".join(BERT_VOCAB) + "\n")
        cfg = transformers.BertConfig(vocab_size=len(BERT_VOCAB), pad_token_id=1, layer_norm_eps=1e-12,
                                      **{**SIZES, **config})
    else:
        vocab = _roberta_tokenizer(path)
        cfg = transformers.RobertaConfig(vocab_size=vocab, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                                         type_vocab_size=1, layer_norm_eps=1e-5,
                                         **{**SIZES, "max_position_embeddings": 42, **config})
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(cfg).eval()
    _perturb(model, seed)
    model.save_pretrained(path)
    if bin_file:
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        os.remove(os.path.join(path, "model.safetensors"))
        torch.save(state, os.path.join(path, "pytorch_model.bin"))
    return path


def write_conversion(hf_dir, out):
    """What fairseq-rela-convert writes (checkpoint.pt, dict.txt), in-process."""
    conv = convert(read_folder(str(hf_dir)), data=str(out))
    os.makedirs(out, exist_ok=True)
    torch.save(conv.checkpoint(), os.path.join(out, "checkpoint.pt"))
    with open(os.path.join(out, "dict.txt"), "w") as f:
        f.write(conv.dictionary_text())
    return conv


def hf_batch(hf_dir):
    """TEXT through the HF tokenizer, right-padded: input_ids, attention_mask."""
    tok = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    return tok(TEXT, padding=True, return_tensors="pt")


def our_tokens(hf_dir, input_ids, dictionary):
    """The HF ids as our dictionary's, by the token strings (the mapping the issue specifies)."""
    tok = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    rows = []
    for row in input_ids.tolist():
        names = tok.convert_ids_to_tokens(row)
        rows.append([dictionary.index(FAIRSEQ_NAME.get(t, t)) for t in names])
    return torch.tensor(rows)


ARCHS = ["BertModel", "BertForMaskedLM", "RobertaModel", "RobertaForMaskedLM"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """architecture -> (hf folder, HF model, our model, task), converted once per module."""
    out = {}
    base = tmp_path_factory.mktemp("hf")
    for arch in ARCHS:
        hf_dir = make_folder(str(base / arch), arch)
        write_conversion(hf_dir, str(base / (arch + "-fairseq")))
        model, task = load_checkpoint(str(base / (arch + "-fairseq") / "checkpoint.pt"),
                                      data=str(base / (arch + "-fairseq")), device="cpu")
        hf = getattr(transformers, arch).from_pretrained(hf_dir, attn_implementation="eager").eval()
        out[arch] = (hf_dir, hf, model, task)
    return out


def compare(hf_dir, hf, model, task):
    """Every layer's hidden states and attention weights, and the MLM logits, of HF's model and ours."""
    enc = hf_batch(hf_dir)
    mask = enc["attention_mask"].bool()
    assert not mask.all()  # a padded batch
    src = our_tokens(hf_dir, enc["input_ids"], task.source_dictionary)
    src[~mask] = task.source_dictionary.pad()
    with torch.no_grad():
        ref = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True,
                 output_attentions=True)
        with AttentionRecorder(model, norms=False) as rec:
            features, extra = model(src, features_only=True, return_all_hiddens=True)
    states = [s.transpose(0, 1) for s in extra["inner_states"]]
    assert len(states) == len(ref.hidden_states) == 3
    for ours, theirs in zip(states, ref.hidden_states):
        torch.testing.assert_close(ours[mask], theirs[mask], atol=1e-5, rtol=1e-5)
    for layer, theirs in enumerate(ref.attentions):
        (r,) = rec.records[("encoder_self", layer)]
        pair = mask[:, None, :, None] & mask[:, None, None, :]
        torch.testing.assert_close(r.weights[pair.expand_as(r.weights)], theirs[pair.expand_as(theirs)],
                                   atol=1e-5, rtol=1e-5)
    if hasattr(ref, "logits"):
        with torch.no_grad():
            logits, _ = model(src)
        ids = torch.tensor([task.source_dictionary.index(FAIRSEQ_NAME.get(t, t)) for t in
                            transformers.AutoTokenizer.from_pretrained(hf_dir).convert_ids_to_tokens(
                                list(range(ref.logits.shape[-1])))])
        assert logits.shape[-1] == ref.logits.shape[-1]  # <mask> is the task's last symbol, no extra row
        torch.testing.assert_close(logits[..., ids][mask], ref.logits[mask], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_converted_model_computes_the_hf_function(converted, arch):
    compare(*converted[arch])


@pytest.mark.parametrize("arch", ["BertModel", "RobertaForMaskedLM"])
def test_norms_block_and_alti_sum_to_the_outputs_of_a_converted_model(converted, arch):
    hf_dir, _, model, task = converted[arch]
    enc = hf_batch(hf_dir)
    src = our_tokens(hf_dir, enc["input_ids"], task.source_dictionary)
    src[~enc["attention_mask"].bool()] = task.source_dictionary.pad()
    attn_out, block_out, hooks = {}, {}, []
    for i, layer in enumerate(model.encoder.sentence_encoder.layers):
        hooks.append(layer.self_attn.register_forward_hook(
            lambda mod, a, out, i=i: attn_out.__setitem__(i, out[0].transpose(0, 1))))
        hooks.append(layer.self_attn_layer_norm.register_forward_hook(
            lambda mod, a, out, i=i: block_out.__setitem__(i, out.transpose(0, 1))))
    with torch.no_grad(), AttentionRecorder(model, keep_vectors=True, block=True) as rec:
        model(src, features_only=True)
    for h in hooks:
        h.remove()
    real = enc["attention_mask"].bool()
    for i in (0, 1):
        (r,) = rec.records[("encoder_self", i)]
        torch.testing.assert_close((r.vectors.sum(2) + r.bias)[real], attn_out[i][real], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close((r.block_vectors.sum(2) + r.block_bias)[real], block_out[i][real],
                                   atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(torch.as_tensor(r.alti).sum(-1)[real], torch.ones(int(real.sum())),
                                   atol=1e-5, rtol=0)
    assert len({id(m) for m in model.modules() if isinstance(m, ReLAMultiheadAttention)}) == 2


def test_dictionary_text_and_refused_logits(converted):
    hf_dir, _, model, task = converted["BertModel"]
    d = task.source_dictionary
    assert d.symbols[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and d.symbols[-1] == "<mask>"
    others = [t for t in BERT_VOCAB if t not in FAIRSEQ_NAME]
    assert d.symbols[4:-1] == others  # HF order, specials mapped to fairseq's
    assert frequent_tokens(d) == set()  # no counts in an HF vocabulary: no "frequent" category
    assert model.args.converted_from.startswith("BertModel (Hugging Face")
    with pytest.raises(ValueError, match="without an MLM head"):
        model(torch.tensor([[0, 5, 2]]))


def test_pytorch_bin_reads_the_same(tmp_path, converted):
    hf_dir = make_folder(str(tmp_path / "bin"), "BertForMaskedLM", bin_file=True)
    assert os.path.exists(os.path.join(hf_dir, "pytorch_model.bin"))
    a = convert(read_folder(hf_dir), data=str(tmp_path)).state_dict
    b = convert(read_folder(converted["BertForMaskedLM"][0]), data=str(tmp_path)).state_dict
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # same seed, same tensors


def test_an_untied_mlm_decoder_converts(tmp_path):
    """A BertForMaskedLM whose output embeddings are not the input ones (fairseq's --untie-weights-roberta)."""
    hf_dir = make_folder(str(tmp_path / "untied"), "BertForMaskedLM", seed=1, tie_word_embeddings=False)
    with pytest.raises(HFConversionError, match="two different output biases"):  # transformers 4 and 5 differ
        convert(read_folder(hf_dir), data=str(tmp_path))
    hf = transformers.BertForMaskedLM.from_pretrained(hf_dir)
    with torch.no_grad():
        hf.cls.predictions.decoder.bias.copy_(hf.cls.predictions.bias)
    hf.save_pretrained(hf_dir)
    conv = write_conversion(hf_dir, str(tmp_path / "out"))
    assert conv.args.untie_weights_roberta
    model, task = load_checkpoint(str(tmp_path / "out" / "checkpoint.pt"), data=str(tmp_path / "out"), device="cpu")
    hf = transformers.BertForMaskedLM.from_pretrained(hf_dir, attn_implementation="eager").eval()
    assert not torch.equal(hf.cls.predictions.decoder.weight, hf.bert.embeddings.word_embeddings.weight)
    compare(hf_dir, hf, model, task)


def _edit_json(path, **changes):
    with open(path) as f:
        value = json.load(f)
    value.update(changes)
    with open(path, "w") as f:
        json.dump(value, f)


def _refusal(tmp_path, converted, arch="BertModel", config=None, vocab=None, weights=None):
    hf_dir = str(tmp_path / "hf")
    shutil.copytree(converted[arch][0], hf_dir)
    if config:
        _edit_json(os.path.join(hf_dir, "config.json"), **config)
    if vocab is not None:
        with open(os.path.join(hf_dir, "vocab.txt"), "w") as f:
            f.write("\n".join(vocab) + "\n")
    if weights is not None:
        weights(hf_dir)
    with pytest.raises(HFConversionError) as err:
        convert(read_folder(hf_dir), data=str(tmp_path))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"--hf {hf_dir}: ")
    return message


def test_other_architectures_are_refused_by_name(tmp_path, converted):
    msg = _refusal(tmp_path, converted, config={"architectures": ["BertForSequenceClassification"]})
    assert "BertForSequenceClassification" in msg and "BertModel, BertForMaskedLM, RobertaModel" in msg


def test_relative_positions_are_refused(tmp_path, converted):
    assert "relative_key" in _refusal(tmp_path, converted, config={"position_embedding_type": "relative_key"})


def test_a_decoder_and_an_unknown_activation_are_refused(tmp_path, converted):
    assert "is_decoder" in _refusal(tmp_path, converted, config={"is_decoder": True})
    shutil.rmtree(tmp_path / "hf")
    assert "'silu'" in _refusal(tmp_path, converted, config={"hidden_act": "silu"})


def test_a_vocabulary_missing_a_special_token_is_refused(tmp_path, converted):
    vocab = [t if t != "[SEP]" else "sep" for t in BERT_VOCAB]
    assert "'[SEP]'" in _refusal(tmp_path, converted, vocab=vocab)


def test_a_tokenizer_that_does_not_match_the_weights_is_refused(tmp_path, converted):
    assert "does not match the weights" in _refusal(tmp_path, converted, vocab=BERT_VOCAB + ["extra"])


def test_tensors_of_another_model_are_refused(tmp_path, converted):
    def add_tensor(hf_dir):
        from safetensors.torch import load_file, save_file
        path = os.path.join(hf_dir, "model.safetensors")
        state = load_file(path)
        state["encoder.layer.0.attention.self.distance_embedding.weight"] = torch.zeros(3, 32)
        save_file(state, path, metadata={"format": "pt"})
    assert "distance_embedding" in _refusal(tmp_path, converted, weights=add_tensor)
