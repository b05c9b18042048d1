"""Hugging Face BERT and RoBERTa folders as fairseq ``roberta`` checkpoints (same function, our dictionary).

    hf = read_folder("bert-base-uncased/")          # config.json, model.safetensors | pytorch_model.bin, tokenizer
    conv = convert(hf, data="OUT")                  # a Conversion: fairseq options, state dict, dictionary
    torch.save(conv.checkpoint(), "OUT/checkpoint.pt"); open("OUT/dict.txt", "w").write(conv.dictionary_text())
    conv.encode(["A sentence."])                   # our token ids (no <s>/</s>), by the model's own tokenizer

Takes ``BertModel``, ``BertForMaskedLM``, ``RobertaModel`` and ``RobertaForMaskedLM``.  A BERT block is
fairseq's post-norm encoder layer with other parameter names; what differs is outside the layers, and is
mapped so that the fairseq model computes exactly the HF function ``h⁰ = LN(E_tok[w] + E_pos[p] + E_type[0])``:

- positions: fairseq's learned positions start at ``padding_idx + 1 = 2`` for the first token, BERT's at 0,
  RoBERTa's at ``pad_token_id + 1``: our row ``k`` is the HF row ``k - 2`` (BERT) or ``k + pad - 1``;
- token types: the analysis feeds single sentences (type 0), so ``E_type[0]`` is added to every position row;
- LayerNorm ε: fairseq builds its LayerNorms with 1e-5; the checkpoint carries ``layer_norm_eps`` (BERT 1e-12)
  and :class:`~fairseq_rela.models.rela_roberta.RelaRobertaModel` applies it to every LayerNorm;
- activation: HF ``gelu`` is fairseq's ``gelu`` (erf), ``gelu_new``/``gelu_pytorch_tanh`` its ``gelu_accurate``;
- vocabulary: ``[CLS]``/``<s>`` → ``<s>``, ``[SEP]``/``</s>`` → ``</s>``, ``[PAD]`` → ``<pad>``, ``[UNK]`` → ``<unk>``,
  ``[MASK]`` → ``<mask>`` (which fairseq's ``masked_lm`` task appends to the dictionary itself); every other
  token keeps its string, in the HF id order, so the embedding (and LM-head) rows are permuted accordingly;
- the MLM head (``cls.predictions``, ``lm_head``) when the folder has one; without one the checkpoint's LM
  head is zero and marked ``mlm_head=False`` (the encoder alone: our model refuses to compute logits).

Anything else is an :class:`HFConversionError` (one line): other architectures, relative or rotary positions,
a decoder, a vocabulary missing a special token, a tokenizer whose vocabulary does not match the weights.
"""
import argparse
import dataclasses
import hashlib
import json
import os
import types
from typing import Dict, List, Optional, Sequence

import torch

from fairseq_rela.errors import OptionError

__all__ = ["ARCHITECTURES", "Conversion", "HFConversionError", "HFModel", "convert", "read_folder"]

#: the Hugging Face classes taken, and whether they carry an MLM head
ARCHITECTURES = {"BertModel": False, "BertForMaskedLM": True, "RobertaModel": False, "RobertaForMaskedLM": True}
#: HF hidden_act -> fairseq activation_fn computing the same function
ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_accurate", "gelu_pytorch_tanh": "gelu_accurate"}
#: role -> (BERT's default string, RoBERTa's default string, fairseq's string)
SPECIALS = {"cls": ("[CLS]", "<s>", "<s>"), "pad": ("[PAD]", "<pad>", "<pad>"), "sep": ("[SEP]", "</s>", "</s>"),
            "unk": ("[UNK]", "<unk>", "<unk>"), "mask": ("[MASK]", "<mask>", "<mask>")}
FAIRSEQ_ORDER = ("cls", "pad", "sep", "unk")  # fairseq's four specials: <s> <pad> </s> <unk>
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# HF tensors that do not enter the function analysed (the pooler, next-sentence head, index buffers)
IGNORED_PREFIXES = ("pooler.", "cls.seq_relationship.", "embeddings.position_ids", "embeddings.token_type_ids")


class HFConversionError(OptionError):
    """A Hugging Face folder that cannot be converted exactly; ``str(err)`` is the one-line message."""


@dataclasses.dataclass(frozen=True)
class HFModel:
    """A Hugging Face folder as read: its config, its tensors (base-model prefix removed), its vocabulary."""

    folder: str
    config: dict
    architecture: str            # one of ARCHITECTURES
    family: str                  # "bert" or "roberta"
    weights_file: str            # the file(s) the tensors came from (first shard)
    weights_sha256: str
    tensors: Dict[str, torch.Tensor]
    vocab: List[str]             # HF id -> token string
    specials: Dict[str, int]     # role (cls, sep, pad, unk, mask) -> HF id
    tokenizer: object            # a tokenizers.Tokenizer
    tokenizer_file: str

    @property
    def mlm_head(self) -> bool:
        return ARCHITECTURES[self.architecture]


@dataclasses.dataclass(frozen=True)
class Conversion:
    """A fairseq ``roberta`` masked LM equal to an :class:`HFModel`: options, state dict and dictionary."""

    args: argparse.Namespace
    state_dict: Dict[str, torch.Tensor]
    symbols: List[str]           # dict.txt, in order (after fairseq's four specials; <mask> is the task's)
    hf_ids: torch.Tensor         # our index -> HF id, for <s> <pad> </s> <unk>, the symbols, <mask>
    mlm_head: bool
    ignored: List[str]           # HF tensors left out (pooler, ...)
    tokenizer: object
    description: str

    def checkpoint(self) -> dict:
        """The checkpoint as fairseq saves one (loads with ``checkpoint_utils``, ``weights_only=True``)."""
        return {"args": self.args, "model": self.state_dict, "last_optimizer_state": None,
                "optimizer_history": [{"criterion_name": "MaskedLmLoss", "optimizer_name": "none",
                                       "lr_scheduler_state": {}, "num_updates": None}],
                "extra_state": {"train_iterator": {"epoch": 0}}}

    def dictionary_text(self) -> str:
        """``dict.txt``: one ``token 1`` line per symbol (HF vocabularies carry no counts: all equal, as the
        ``<mask>`` that fairseq's masked_lm task adds with count 1)."""
        return "".join(f"{s} 1\n" for s in self.symbols)

    def ours(self) -> torch.Tensor:
        """HF id -> our index."""
        inverse = torch.empty_like(self.hf_ids)
        inverse[self.hf_ids] = torch.arange(len(self.hf_ids))
        return inverse

    def encode(self, lines: Sequence[str]) -> List[torch.Tensor]:
        """Each line tokenised by the model's own tokenizer, without its [CLS]/[SEP] (fairseq's masked-LM
        data adds ``<s>`` and ``</s>``), as our token ids; no truncation, no padding."""
        inverse = self.ours()
        return [inverse[torch.tensor(enc.ids, dtype=torch.long)]
                for enc in self.tokenizer.encode_batch(list(lines), add_special_tokens=False)]


def _fail(folder: str, message: str) -> HFConversionError:
    return HFConversionError(f"--hf {folder}: {message}")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _read_json(folder: str, name: str) -> Optional[dict]:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as err:
        raise _fail(folder, f"{name} cannot be read ({err})") from err
    if not isinstance(value, dict):
        raise _fail(folder, f"{name} is not a JSON object")
    return value


def _architecture(folder: str, config: dict) -> str:
    model_type = config.get("model_type")
    names = config.get("architectures") or []
    if len(names) != 1 or names[0] not in ARCHITECTURES:
        shown = ", ".join(map(str, names)) or f"model_type {model_type!r}, no architectures"
        raise _fail(folder, f"the model is {shown}: fairseq-rela-convert takes only {', '.join(ARCHITECTURES)}")
    family = "roberta" if names[0].startswith("Roberta") else "bert"
    if model_type != family:
        raise _fail(folder, f"config.json's model_type {model_type!r} is not {family!r} ({names[0]}): "
                            f"fairseq-rela-convert takes only {', '.join(ARCHITECTURES)}")
    position = config.get("position_embedding_type", "absolute")
    if position != "absolute":
        raise _fail(folder, f"position_embedding_type {position!r}: only absolute (learned) positions convert "
                            "to fairseq's learned positions (relative and rotary positions do not)")
    for flag in ("is_decoder", "add_cross_attention"):
        if config.get(flag):
            raise _fail(folder, f"config.json sets {flag}: only bidirectional encoders convert")
    act = config.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise _fail(folder, f"hidden_act {act!r}: fairseq has no exact equivalent (convertible: "
                            f"{', '.join(ACTIVATIONS)})")
    if family == "roberta" and ARCHITECTURES[names[0]] and act != "gelu":
        raise _fail(folder, f"hidden_act {act!r}: RoBERTa's MLM head uses gelu whatever hidden_act says, "
                            "fairseq's uses hidden_act: not convertible exactly")
    return names[0]


def _load_tensors(folder: str):
    """The folder's tensors (safetensors preferred; ``.bin`` with ``weights_only=True``), its file and SHA-256."""
    name = next((n for n in WEIGHT_FILES if os.path.isfile(os.path.join(folder, n))), None)
    if name is None:
        raise _fail(folder, f"no weights ({' or '.join(WEIGHT_FILES)})")
    files = [name]
    if name.endswith(".index.json"):
        index = _read_json(folder, name) or {}
        files = sorted(set((index.get("weight_map") or {}).values()))
        if not files:
            raise _fail(folder, f"{name} has no weight_map")
    tensors = {}
    for file in files:
        path = os.path.join(folder, file)
        try:
            if file.endswith(".safetensors"):
                from safetensors.torch import load_file
                part = load_file(path, device="cpu")
            else:
                part = torch.load(path, map_location="cpu", weights_only=True)
        except ImportError as err:
            raise _fail(folder, f"{file}: reading it needs the safetensors package (pip install safetensors)") from err
        except Exception as err:  # a damaged or foreign file: whatever the reader raises, one line
            raise _fail(folder, f"{file} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:200]})") \
                from err
        if not isinstance(part, dict) or not all(torch.is_tensor(v) for v in part.values()):
            raise _fail(folder, f"{file} is not a state dict of tensors")
        tensors.update(part)
    return tensors, files[0], _sha256(os.path.join(folder, files[0]))


def _strip(tensors: Dict[str, torch.Tensor], family: str) -> Dict[str, torch.Tensor]:
    """Base-model prefix (``bert.``, ``roberta.``) removed; TF-era ``gamma``/``beta`` as ``weight``/``bias``."""
    out = {}
    for key, value in tensors.items():
        if key.startswith(family + "."):
            key = key[len(family) + 1:]
        if key.endswith("LayerNorm.gamma"):
            key = key[:-len("gamma")] + "weight"
        elif key.endswith("LayerNorm.beta"):
            key = key[:-len("beta")] + "bias"
        out[key] = value
    return out


def _special_strings(folder: str, family: str) -> Dict[str, str]:
    """role -> token string, from special_tokens_map.json / tokenizer_config.json, else the family's defaults."""
    strings = {role: names[0 if family == "bert" else 1] for role, names in SPECIALS.items()}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):  # the map, read last, wins
        for role in SPECIALS:
            value = (_read_json(folder, name) or {}).get(f"{role}_token")
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                strings[role] = value
    return strings


def _missing(folder: str, role: str, token: str) -> HFConversionError:
    return _fail(folder, f"the vocabulary has no {token!r} ({role} token): fairseq's <s>, </s>, <pad>, <unk> and "
                         "<mask> need all five")


def _tokenizer(folder: str, family: str, strings: Dict[str, str]):
    """The model's tokenizer as a ``tokenizers.Tokenizer`` (tokenizer.json, else vocab.txt or vocab.json +
    merges.txt), without truncation or padding, and the file it came from."""
    try:
        import tokenizers
    except ImportError as err:
        raise _fail(folder, "reading the tokenizer needs the tokenizers package (pip install tokenizers)") from err
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    config = _read_json(folder, "tokenizer_config.json") or {}
    try:
        if os.path.isfile(path("tokenizer.json")):
            tok, file = tokenizers.Tokenizer.from_file(path("tokenizer.json")), "tokenizer.json"
        elif family == "bert" and os.path.isfile(path("vocab.txt")):
            from tokenizers.implementations import BertWordPieceTokenizer
            with open(path("vocab.txt"), encoding="utf-8") as f:
                tokens = set(f.read().split("\n"))
            for role, token in strings.items():  # the tokenizer's own message would not name the token
                if token not in tokens:
                    raise _missing(folder, role, token)
            tok = BertWordPieceTokenizer(path("vocab.txt"), lowercase=bool(config.get("do_lower_case", True)),
                                         strip_accents=config.get("strip_accents"),
                                         handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)))
            tok, file = tok._tokenizer, "vocab.txt"
        elif family == "roberta" and os.path.isfile(path("vocab.json")) and os.path.isfile(path("merges.txt")):
            from tokenizers.implementations import ByteLevelBPETokenizer
            tok = ByteLevelBPETokenizer(path("vocab.json"), path("merges.txt"),
                                        add_prefix_space=bool(config.get("add_prefix_space", False)))
            tok, file = tok._tokenizer, "vocab.json"
        else:
            wanted = "vocab.txt" if family == "bert" else "vocab.json and merges.txt"
            raise _fail(folder, f"no tokenizer (tokenizer.json or {wanted}): the vocabulary decides the dictionary")
    except HFConversionError:
        raise
    except Exception as err:
        raise _fail(folder, f"the tokenizer cannot be read ({type(err).__name__}: {str(err)[:200]})") from err
    tok.no_truncation()
    tok.no_padding()
    return tok, file


def read_folder(folder: str) -> HFModel:
    """Read and check a Hugging Face folder (config, tokenizer, then weights); :class:`HFConversionError`
    (one line) for anything :func:`convert` cannot turn into the same function."""
    if not os.path.isdir(folder):
        raise _fail(folder, "not a folder")
    config = _read_json(folder, "config.json")
    if config is None:
        raise _fail(folder, "no config.json: not a Hugging Face model folder")
    architecture = _architecture(folder, config)
    family = "roberta" if architecture.startswith("Roberta") else "bert"
    strings = _special_strings(folder, family)
    tokenizer, tokenizer_file = _tokenizer(folder, family, strings)
    ids = tokenizer.get_vocab(with_added_tokens=True)
    vocab = [None] * len(ids)
    for token, i in ids.items():
        if not 0 <= i < len(vocab) or vocab[i] is not None:
            raise _fail(folder, f"the tokenizer's ids are not 0..{len(ids) - 1} ({token!r} has id {i})")
        vocab[i] = token
    specials = {}
    for role, token in strings.items():
        if token not in ids:
            raise _missing(folder, role, token)
        specials[role] = ids[token]
    if len(set(specials.values())) != len(specials):
        raise _fail(folder, f"two special roles share one token ({strings})")
    fairseq_names = {names[2] for names in SPECIALS.values()}
    for i, token in enumerate(vocab):
        if i in specials.values():
            continue
        if not token or token != token.strip() or len(token.split()) != 1 or token in fairseq_names:
            raise _fail(folder, f"token {i} ({token!r}) cannot be a fairseq dictionary entry (whitespace, or "
                                "one of fairseq's special strings)")
    raw, weights_file, sha = _load_tensors(folder)
    tensors = _strip(raw, family)
    emb = tensors.get("embeddings.word_embeddings.weight")
    if emb is None:
        raise _fail(folder, f"{weights_file} has no embeddings.word_embeddings.weight: not a {architecture}")
    if emb.shape[0] != len(vocab) or config.get("vocab_size", emb.shape[0]) != emb.shape[0]:
        raise _fail(folder, f"the tokenizer ({tokenizer_file}: {len(vocab)} tokens) does not match the weights "
                            f"({emb.shape[0]} embedding rows, config vocab_size {config.get('vocab_size')})")
    pad_id = config.get("pad_token_id")
    if pad_id is not None and pad_id != specials["pad"]:
        raise _fail(folder, f"config.json's pad_token_id {pad_id} is not the tokenizer's {strings['pad']!r} "
                            f"(id {specials['pad']}): the tokenizer does not match the weights")
    return HFModel(folder=folder, config=config, architecture=architecture, family=family,
                   weights_file=weights_file, weights_sha256=sha, tensors=tensors, vocab=vocab, specials=specials,
                   tokenizer=tokenizer, tokenizer_file=tokenizer_file)


def _fairseq_args(hf: HFModel, data: str, max_positions: int, untied: bool) -> argparse.Namespace:
    """The options of fairseq's ``roberta`` (``--task masked_lm``) describing ``hf``, as ``fairseq-train``
    would have saved them."""
    from fairseq import options

    c = hf.config
    heads, dim = c["num_attention_heads"], c["hidden_size"]
    if dim % heads:
        raise _fail(hf.folder, f"hidden_size {dim} is not a multiple of num_attention_heads {heads}")
    argv = [data, "--task", "masked_lm", "--criterion", "masked_lm", "--arch", "roberta_base",
            "--encoder-layers", str(c["num_hidden_layers"]), "--encoder-embed-dim", str(dim),
            "--encoder-ffn-embed-dim", str(c["intermediate_size"]), "--encoder-attention-heads", str(heads),
            "--activation-fn", ACTIVATIONS[c.get("hidden_act", "gelu")],
            "--dropout", str(c.get("hidden_dropout_prob", 0.1)),
            "--attention-dropout", str(c.get("attention_probs_dropout_prob", 0.1)),
            "--max-positions", str(max_positions), "--tokens-per-sample", str(max_positions),
            "--sample-break-mode", "eos", "--optimizer", "adam", "--lr", "0.0001"]
    if untied:
        argv.append("--untie-weights-roberta")
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    args.layer_norm_eps = float(c.get("layer_norm_eps", 1e-12))
    args.mlm_head = hf.mlm_head
    args.converted_from = f"{hf.architecture} (Hugging Face: {os.path.basename(os.path.normpath(hf.folder))})"
    return args


def _layer_map(i: int) -> Dict[str, str]:
    hf, fs = f"encoder.layer.{i}.", f"encoder.sentence_encoder.layers.{i}."
    pairs = {"attention.self.query": "self_attn.q_proj", "attention.self.key": "self_attn.k_proj",
             "attention.self.value": "self_attn.v_proj", "attention.output.dense": "self_attn.out_proj",
             "attention.output.LayerNorm": "self_attn_layer_norm", "intermediate.dense": "fc1",
             "output.dense": "fc2", "output.LayerNorm": "final_layer_norm"}
    return {hf + a + "." + p: fs + b + "." + p for a, b in pairs.items() for p in ("weight", "bias")}


def convert(hf: HFModel, data: str) -> Conversion:
    """``hf`` as a fairseq ``roberta`` state dict, options and dictionary computing the same function
    (module docstring); ``data``: the folder the checkpoint's ``--data`` names (its dict.txt's)."""
    from fairseq.data import Dictionary
    from fairseq.models.roberta.model import RobertaModel

    t, c = dict(hf.tensors), hf.config
    take = lambda key: t.pop(key).float()  # noqa: E731
    head = "cls.predictions." if hf.family == "bert" else "lm_head."
    special_ids = set(hf.specials.values())
    hf_ids = [hf.specials[r] for r in FAIRSEQ_ORDER] + [i for i in range(len(hf.vocab)) if i not in special_ids] \
        + [hf.specials["mask"]]
    hf_ids = torch.tensor(hf_ids, dtype=torch.long)
    symbols = [hf.vocab[i] for i in hf_ids[4:-1].tolist()]
    word = take("embeddings.word_embeddings.weight")
    # tie_word_embeddings (default true): transformers loads the output embeddings as the input ones, whatever
    # the file holds under decoder.weight; untied, decoder.weight is the output matrix
    untied = hf.mlm_head and not c.get("tie_word_embeddings", True)
    decoder_w = t.pop(head + "decoder.weight", None) if hf.mlm_head else None
    if untied and decoder_w is None:
        raise _fail(hf.folder, f"tie_word_embeddings is false but {hf.weights_file} has no {head}decoder.weight")
    # positions: HF row of the first token is 0 (BERT) or pad + 1 (RoBERTa); fairseq's is padding_idx + 1 = 2
    pos = take("embeddings.position_embeddings.weight")
    first = 0 if hf.family == "bert" else hf.specials["pad"] + 1
    max_positions = pos.shape[0] - first
    if max_positions < 2:
        raise _fail(hf.folder, f"{pos.shape[0]} position embeddings leave no room for a sentence")
    types_ = t.pop("embeddings.token_type_embeddings.weight", None)
    dictionary = Dictionary()
    for s in symbols:
        dictionary.add_symbol(s)
    dictionary.add_symbol("<mask>")  # as fairseq's masked_lm task does after loading dict.txt
    args = _fairseq_args(hf, os.path.abspath(data), max_positions, untied)
    task = types.SimpleNamespace(source_dictionary=dictionary, max_positions=lambda: max_positions)
    with torch.random.fork_rng(devices=[]):
        model = RobertaModel.build_model(argparse.Namespace(**vars(args)), task)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    enc = "encoder.sentence_encoder."
    if sd[enc + "embed_tokens.weight"].shape != word[hf_ids].shape:
        raise _fail(hf.folder, "embedding shape mismatch")  # cannot happen: the dictionary is built from hf_ids
    sd[enc + "embed_tokens.weight"] = word[hf_ids]
    table = torch.zeros_like(sd[enc + "embed_positions.weight"])
    table[2:] = pos[first:first + table.shape[0] - 2]
    if types_ is not None:
        table[2:] += types_[0].float()  # token type 0 of every single-sentence input, folded in
    sd[enc + "embed_positions.weight"] = table
    sd[enc + "layernorm_embedding.weight"] = take("embeddings.LayerNorm.weight")
    sd[enc + "layernorm_embedding.bias"] = take("embeddings.LayerNorm.bias")
    for i in range(c["num_hidden_layers"]):
        for src, dst in _layer_map(i).items():
            if src not in t:
                raise _fail(hf.folder, f"{hf.weights_file} has no {src}: not a {hf.architecture} of "
                                       f"{c['num_hidden_layers']} layers")
            value = take(src)
            if value.shape != sd[dst].shape:
                raise _fail(hf.folder, f"{src} has shape {tuple(value.shape)}, config.json implies "
                                       f"{tuple(sd[dst].shape)}")
            sd[dst] = value
    lm = "encoder.lm_head."
    if hf.mlm_head:
        prefix = "cls.predictions.transform." if hf.family == "bert" else "lm_head."
        names = {"dense.weight": "dense.weight", "dense.bias": "dense.bias",
                 ("LayerNorm" if hf.family == "bert" else "layer_norm") + ".weight": "layer_norm.weight",
                 ("LayerNorm" if hf.family == "bert" else "layer_norm") + ".bias": "layer_norm.bias"}
        for a, b in names.items():
            if prefix + a not in t:
                raise _fail(hf.folder, f"{hf.weights_file} has no {prefix + a}: a {hf.architecture} needs its MLM head")
            sd[lm + b] = take(prefix + a)
        bias = t.pop(head + "bias", None)
        decoder_b = t.pop(head + "decoder.bias", None)
        if untied and bias is not None and decoder_b is not None and not torch.equal(bias, decoder_b):
            # transformers 5 then adds decoder.bias, 4 ties it to bias: which one the model has depends on the reader
            raise _fail(hf.folder, f"untied output embeddings with two different output biases ({head}bias, "
                                   f"{head}decoder.bias): transformers versions disagree on which applies")
        bias = bias if bias is not None else decoder_b
        if bias is None:
            raise _fail(hf.folder, f"{hf.weights_file} has no {head}bias")
        sd[lm + "bias"] = bias.float()[hf_ids]
        if untied:
            sd[lm + "weight"] = decoder_w.float()[hf_ids]
    else:
        for key in [k for k in sd if k.startswith(lm) and k != lm + "weight"]:  # lm_head.weight: the embeddings
            sd[key] = torch.zeros_like(sd[key])  # no head: never used (RelaRobertaModel refuses logits)
    ignored = sorted(k for k in t if k.startswith(IGNORED_PREFIXES) or (not hf.mlm_head and k.startswith(head)))
    unknown = sorted(set(t) - set(ignored))
    if unknown:
        raise _fail(hf.folder, f"{hf.weights_file} holds tensors a {hf.architecture} of this config does not have "
                               f"({unknown[0]}{', ...' if len(unknown) > 1 else ''}): not convertible exactly")
    if not untied:
        sd[lm + "weight"] = sd[enc + "embed_tokens.weight"]  # tied, as in the model: one tensor
    head_text = "with its MLM head" if hf.mlm_head else "encoder only (no MLM head: no logits)"
    description = (f"{hf.architecture} ({c['num_hidden_layers']} layers, {c['hidden_size']} wide, "
                   f"{c['num_attention_heads']} heads, FFN {c['intermediate_size']}, {c.get('hidden_act', 'gelu')}, "
                   f"LayerNorm eps {args.layer_norm_eps:g}, {len(hf.vocab)} tokens, {max_positions} positions), "
                   f"{head_text}")
    return Conversion(args=args, state_dict=sd, symbols=symbols, hf_ids=hf_ids, mlm_head=hf.mlm_head,
                      ignored=ignored, tokenizer=hf.tokenizer, description=description)
