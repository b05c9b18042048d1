"""The recipes as data: one entry per language pair of the two papers, with the settings and the
published numbers (sources in examples/reproduce/README.md)."""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

AVERAGE_LAST = 5  # ReLA pairs: the last 5 interval checkpoints are kept and averaged

# attention variant -> fairseq-train options
VARIANTS: Dict[str, Tuple[str, ...]] = {
    "softmax": ("--attention-activation", "softmax"),
    "sparsemax": ("--attention-activation", "sparsemax"),
    "entmax15": ("--attention-activation", "entmax15"),
    "rela-i": ("--attention-activation", "rela", "--rela-variant", "i"),
    "rela-g": ("--attention-activation", "rela", "--rela-variant", "g"),
}

# Zhang, Titov, Sennrich 2021 (zero's README and run.py): Transformer base, 6+6, 512/2048, 8 heads,
# dropout/attention dropout/label smoothing 0.1, Adam (0.9, 0.98, 1e-8), Noam lr 1.0 with 4,000 warm-up
# steps (= inverse_sqrt peaking at 512^-0.5 * 4000^-0.5 = 6.99e-4), no clipping, ~25k tokens per update.
RELA_TRAIN = (
    "--arch", "rela_transformer_wmt_en_de", "--share-all-embeddings",
    "--dropout", "0.1", "--attention-dropout", "0.1",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-8",
    "--lr", "7e-4", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4000", "--warmup-init-lr", "1e-7",
    "--clip-norm", "0.0",
    # length and checkpoint interval: the authors' command (max_training_steps=300000, eval_freq=5000,
    # checkpoints=5); selection differs: we average the last 5 interval checkpoints (see README.md)
    "--max-update", "300000", "--save-interval-updates", "5000", "--keep-interval-updates", str(AVERAGE_LAST),
    "--no-epoch-checkpoints",
)

# Kobayashi et al. 2020 (emnlp2020/exp2_nmt): transformer_iwslt_de_en, fp16, max-tokens 4000 x update-freq 8
# on 2 GPUs, up to 100 epochs, best checkpoint by validation BLEU.  Optimiser settings are fairseq's
# IWSLT'14 example (the issue does not list them).
KOBAYASHI_TRAIN = (
    "--arch", "rela_transformer_iwslt_de_en", "--share-decoder-input-output-embed",
    "--dropout", "0.3", "--weight-decay", "0.0001",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--clip-norm", "0.0",
    "--lr", "5e-4", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4000",
    "--max-epoch", "100", "--no-epoch-checkpoints",
    "--eval-bleu", "--eval-bleu-args", '{"beam": 4}', "--eval-bleu-detok", "space",
    "--eval-bleu-remove-bpe", "sentencepiece", "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric",
)


@dataclass(frozen=True)
class Pair:
    name: str
    src: str
    tgt: str
    paper: str                      # "rela" or "kobayashi"
    table: str                      # the paper table it reproduces
    train_args: Tuple[str, ...]
    tokens_per_update: int          # kept constant whatever the number of GPUs
    max_tokens: int                 # per GPU and batch (default; --max-tokens overrides)
    hf_train: Optional[Tuple[str, str]] = None   # Hugging Face dataset, config (internet path)
    valid_set: Optional[str] = None              # sacrebleu test set names (internet path)
    test_set: Optional[str] = None
    vocab_size: int = 32000
    joint_vocab: bool = True
    max_char_ratio: Optional[float] = 3.0        # training-pair filter (None: length scripts differ)
    published: Dict[str, float] = field(default_factory=dict)
    variants: Tuple[str, ...] = tuple(VARIANTS)
    seeds: Tuple[int, ...] = (1,)
    average_last: Optional[int] = None           # evaluate the average of the last N interval checkpoints (None: best)


def _rela(name, src, tgt, hf, valid, test, table, published, max_char_ratio=3.0):
    return Pair(name, src, tgt, "rela", table, RELA_TRAIN, 25000, 6250, hf, valid, test,
                max_char_ratio=max_char_ratio, published=published, average_last=AVERAGE_LAST)


def _published(softmax, sparsemax, entmax15, rela):
    return {"softmax": softmax, "sparsemax": sparsemax, "entmax15": entmax15, "rela-g": rela}


PAIRS: Dict[str, Pair] = {p.name: p for p in (
    _rela("en-de", "en", "de", ("wmt/wmt14", "de-en"), "wmt13", "wmt14/full", "ReLA paper, WMT14 En-De", {}),
    _rela("en-fr", "en", "fr", ("wmt/wmt14", "fr-en"), "wmt13", "wmt14/full", "ReLA paper, other pairs",
          _published(37.2, 37.3, 37.9, 37.9)),
    _rela("en-fi", "en", "fi", ("wmt/wmt18", "fi-en"), "wmt17", "wmt18", "ReLA paper, other pairs",
          _published(15.5, 15.1, 15.5, 15.4)),
    _rela("zh-en", "zh", "en", ("wmt/wmt18", "zh-en"), "wmt17", "wmt18", "ReLA paper, other pairs",
          _published(21.1, 19.2, 20.8, 20.8), max_char_ratio=None),
    _rela("ro-en", "ro", "en", ("wmt/wmt16", "ro-en"), "wmt16/dev", "wmt16", "ReLA paper, other pairs",
          _published(32.7, 33.5, 33.2, 32.9)),
    Pair("europarl-de-en", "de", "en", "kobayashi", "Kobayashi et al. 2020, alignment (AER)", KOBAYASHI_TRAIN,
         64000, 4000, vocab_size=10000, joint_vocab=False,
         # best layer, 5-seed mean AER (%): the paper's layer 2 (1-based) is our layer index 1
         published={"weights-AWO": 47.7, "weights-AWI": 29.8, "norms-AWO": 41.4, "norms-AWI": 25.0},
         variants=("softmax",) + tuple(v for v in VARIANTS if v != "softmax"), seeds=(1, 2, 3, 4, 5)),
)}

EUROPARL_URL = "https://www.statmt.org/europarl/v7/de-en.tgz"
