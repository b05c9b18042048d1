"""Our value zeroing against the authors' own code on the same weights and inputs.

    python examples/analysis/value_zeroing_vs_authors.py --authors PATH/ValueZeroing [--layers 2] [--sentences 5]

PATH/ValueZeroing is a checkout of https://github.com/hmohebbi/ValueZeroing (Mohebbi et al., EACL 2023); its
``modeling/customized_modeling_bert.py`` (a Hugging Face ``BertLayer`` whose self-attention takes
``zero_value_index``) is imported from there, never copied.  It was written for transformers 4: the few
helpers transformers 5 moved to ``pytorch_utils`` are made visible where it looks for them before the import.

A small random post-norm fairseq ``roberta`` (GELU, the BERT architecture) is converted to our
``RelaRobertaModel``; each layer's weights are loaded into one of the authors' ``BertLayer`` s
(q/k/v, the output projection and its LayerNorm, the feed-forward and its LayerNorm).  For random sentences
(batch 1, no padding), the authors' procedure of ``scoring/value_zeroing.py`` runs on the layer inputs our
model computed: for each layer and token ``t``, ``layer_module(hidden, zero_value_index=t)``, sklearn's
``cosine_distances(new, original).diagonal()``, rows normalised, and ``compute_joint_attention(res=False)``
written out here as the rollout of the normalised matrices.  Prints the largest absolute difference of
the per-layer matrices and of the rollout against ``AttentionRecorder(value_zeroing=True)``; exit 1 if
either exceeds ``--tolerance``.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch


def import_authors(checkout: Path):
    import transformers.file_utils as file_utils
    import transformers.modeling_utils as modeling_utils
    import transformers.pytorch_utils as pytorch_utils
    import transformers.utils as utils

    for name in ("apply_chunking_to_forward", "find_pruneable_heads_and_indices", "prune_linear_layer"):
        if not hasattr(modeling_utils, name):
            setattr(modeling_utils, name, getattr(pytorch_utils, name, None) or (lambda *a, **k: None))
    for name in ("add_code_sample_docstrings", "add_start_docstrings", "add_start_docstrings_to_model_forward",
                 "replace_return_docstrings", "ModelOutput"):
        if not hasattr(file_utils, name):
            setattr(file_utils, name, getattr(utils, name, None) or (lambda *a, **k: (lambda f: f)))
    sys.path.insert(0, str(checkout / "modeling"))
    import customized_modeling_bert  # noqa: E402  (the authors' file)

    return customized_modeling_bert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--authors", required=True, type=Path, help="checkout of hmohebbi/ValueZeroing")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--sentences", type=int, default=5)
    parser.add_argument("--length", type=int, default=12)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--float32", action="store_true",
                        help="run the authors' layers in float32 as their script does (default float64: their "
                             "1 - cos in float32 has an absolute error of about 1e-7, large against the distances "
                             "of a small random model)")
    args = parser.parse_args()
    if not (args.authors / "modeling" / "customized_modeling_bert.py").is_file():
        sys.exit(f"value_zeroing_vs_authors.py: error: --authors {args.authors}: no modeling/customized_modeling_bert.py")
    authors = import_authors(args.authors)
    from sklearn.metrics.pairwise import cosine_distances
    from fairseq.models.roberta import RobertaModel
    from fairseq.data import Dictionary
    from transformers.models.bert.configuration_bert import BertConfig

    import fairseq_rela.models  # noqa: F401
    from fairseq_rela.models.conversion import as_rela_roberta
    from fairseq_rela.recording import AttentionRecorder

    torch.manual_seed(0)
    dictionary = Dictionary()
    for i in range(60):
        dictionary.add_symbol(f"w{i}")
    dictionary.add_symbol("<mask>")
    task = argparse.Namespace(source_dictionary=dictionary, target_dictionary=dictionary)
    model_args = argparse.Namespace(encoder_layers=args.layers, encoder_embed_dim=args.dim,
                                    encoder_ffn_embed_dim=2 * args.dim, encoder_attention_heads=4, max_positions=64,
                                    dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    from fairseq.models.roberta.model import base_architecture

    base_architecture(model_args)
    stock = RobertaModel.build_model(model_args, task).eval()
    with torch.no_grad():  # biases and LayerNorm gains away from their init, as the tests do
        for name, p in stock.named_parameters():
            p.add_(torch.randn(p.shape) * (0.3 if "layer_norm" in name or name.endswith("bias") else 0.05))
    model = as_rela_roberta(stock).eval()
    layers = model.encoder.sentence_encoder.layers
    config = BertConfig(hidden_size=args.dim, num_attention_heads=4, intermediate_size=2 * args.dim, hidden_act="gelu",
                        layer_norm_eps=layers[0].self_attn_layer_norm.eps, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    theirs = []
    for layer in layers:
        bert = authors.BertLayer(config).eval()
        pairs = [(bert.attention.self.query, layer.self_attn.q_proj), (bert.attention.self.key, layer.self_attn.k_proj),
                 (bert.attention.self.value, layer.self_attn.v_proj), (bert.attention.output.dense, layer.self_attn.out_proj),
                 (bert.attention.output.LayerNorm, layer.self_attn_layer_norm), (bert.intermediate.dense, layer.fc1),
                 (bert.output.dense, layer.fc2), (bert.output.LayerNorm, layer.final_layer_norm)]
        with torch.no_grad():
            for dst, src in pairs:
                dst.weight.copy_(src.weight)
                dst.bias.copy_(src.bias)
        theirs.append(bert if args.float32 else bert.double())
    worst_layer = worst_rollout = 0.0
    for s in range(args.sentences):
        tokens = torch.randint(dictionary.nspecial, len(dictionary) - 1, (1, args.length))
        tokens[0, 0], tokens[0, -1] = dictionary.bos(), dictionary.eos()
        inputs = {}  # the layer's first call: the pass (value zeroing's reruns of it follow)

        def keep(l):
            def hook(module, a, k):
                inputs.setdefault(l, (a[0] if a else k["x"])[:, 0])
            return hook

        hooks = [layer.register_forward_pre_hook(keep(l), with_kwargs=True) for l, layer in enumerate(layers)]
        with torch.no_grad(), AttentionRecorder(model, norms=False, value_zeroing=True) as rec:
            model(tokens, features_only=True)
        for h in hooks:
            h.remove()
        ours = np.stack([rec.records[("encoder_self", l)][0].value_zeroing[0].numpy() for l in range(len(layers))])
        scores = np.zeros_like(ours, dtype=np.float64)
        with torch.no_grad():
            for l, bert in enumerate(theirs):
                hidden = inputs[l][None].to(next(bert.parameters()).dtype)  # (1, T, E): the layer's original input
                original = bert(hidden)[0][0].numpy()
                for t in range(args.length):
                    new = bert(hidden, zero_value_index=t)[0][0].numpy()
                    scores[l, :, t] = cosine_distances(new, original).diagonal()
        scores = scores / scores.sum(-1, keepdims=True)
        joint = [scores[0]]
        for l in range(1, len(layers)):
            joint.append(scores[l] @ joint[-1])
        ours_joint = [ours[0].astype(np.float64)]
        for l in range(1, len(layers)):
            ours_joint.append(ours[l] @ ours_joint[-1])
        worst_layer = max(worst_layer, float(np.abs(scores - ours).max()))
        worst_rollout = max(worst_rollout, float(np.abs(np.stack(joint) - np.stack(ours_joint)).max()))
    print(f"{args.sentences} sentences of {args.length} tokens, {len(layers)} layers, the authors' code in "
          f"{'float32' if args.float32 else 'float64'}: largest |authors - ours| "
          f"per layer {worst_layer:.2e}, rollout {worst_rollout:.2e}")
    if max(worst_layer, worst_rollout) > args.tolerance:
        sys.exit(f"value_zeroing_vs_authors.py: error: differences above --tolerance {args.tolerance}")


if __name__ == "__main__":
    main()
