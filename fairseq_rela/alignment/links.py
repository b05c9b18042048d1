"""Word alignments from an attention matrix (weights or norms) of one sentence pair.

Rows of the matrix are decoder positions (``</s> y1 .. yn`` as input, predicting ``y1 .. yn </s>``),
columns source tokens ending in ``</s>``.  The target token y_t is aligned with

* AWO (default): the row that *predicts* y_t (row t), or
* AWI (``shift=True``): the row whose decoder *input* is y_t (row t+1) — Kobayashi et al.'s
  "alignment with input", Chen et al.'s shift.

Subwords are merged into words (``sentencepiece``: a piece starting with ``▁`` starts a word;
``subword_nmt``: a piece ending with ``@@`` continues) by one of two documented rules:

* ``sum_mean`` (Kobayashi et al.): source subword columns summed, target subword rows averaged,
  then each target word links to its best source word;
* ``any``: subword-level links, and two words are linked if any of their subwords are.

``</s>`` is never aligned: a target word whose best source is ``</s>``, or whose row is all zero
(ReLA's null attention), is left unaligned.  Links are ``(source_word, target_word)``, 0-based.
"""
from typing import List, Sequence, Tuple

import numpy as np

from fairseq_rela.errors import OptionError, check_choice

MERGE_STYLES = ("none", "sentencepiece", "subword_nmt")
MERGE_RULES = ("sum_mean", "any")
Link = Tuple[int, int]


def word_ids(tokens: Sequence[str], style: str) -> List[int]:
    """The word index of each subword token."""
    check_choice("subword merge style", style, MERGE_STYLES)
    ids, word = [], -1
    for i, tok in enumerate(tokens):
        if style == "none":
            word += 1
        elif style == "sentencepiece":
            word += 1 if (i == 0 or tok.startswith("\u2581")) else 0
        else:  # subword_nmt: a piece continues when the previous one ended in @@
            word += 1 if (i == 0 or not tokens[i - 1].endswith("@@")) else 0
        ids.append(word)
    return ids


def detect_style(dictionary) -> str:
    """``sentencepiece``, ``subword_nmt`` or ``none``, from a fairseq dictionary's symbols."""
    symbols = dictionary.symbols[dictionary.nspecial:]
    if any(s.startswith("\u2581") for s in symbols):
        return "sentencepiece"
    if any(s.endswith("@@") for s in symbols):
        return "subword_nmt"
    return "none"


def merge_styles(merge: str, src_dict, tgt_dict, flag: str = "--merge-subwords") -> Tuple[str, str]:
    """(source style, target style) for a merge option: ``auto`` detects each from its fairseq
    dictionary, any other value of :data:`MERGE_STYLES` applies to both sides."""
    check_choice(flag, merge, ("auto",) + MERGE_STYLES)
    if merge == "auto":
        return detect_style(src_dict), detect_style(tgt_dict)
    if merge == "sentencepiece":  # SentencePiece starts every word with '\u2581': without one, all would be one word
        for side, dictionary in (("source", src_dict), ("target", tgt_dict)):
            if detect_style(dictionary) != "sentencepiece":
                raise OptionError(f"{flag} sentencepiece: the {side} dictionary has no token starting with "
                                  f"'\u2581', so its tokens are not SentencePiece pieces (each sentence would be "
                                  f"one word); use auto, subword_nmt or none")
    return merge, merge


def _group(matrix: np.ndarray, ids: List[int], axis: int, reduce: str) -> np.ndarray:
    n = max(ids) + 1 if ids else 0
    onehot = np.zeros((len(ids), n))
    onehot[np.arange(len(ids)), ids] = 1
    if reduce == "mean":
        onehot /= onehot.sum(0, keepdims=True)
    return matrix @ onehot if axis == 1 else onehot.T @ matrix


def target_rows(matrix: np.ndarray, n_target: int, shift: bool) -> np.ndarray:
    """The rows for target tokens 0..n-1: row t (AWO) or row t+1 (AWI)."""
    rows = matrix[1 : n_target + 1] if shift else matrix[:n_target]
    if rows.shape[0] != n_target:
        raise ValueError(f"attention has {matrix.shape[0]} rows, too few for {n_target} target tokens"
                         f"{' with the shift' if shift else ''}")
    return rows


def align(matrix: np.ndarray, src_tokens: Sequence[str], tgt_tokens: Sequence[str], shift: bool = False,
          src_style: str = "none", tgt_style: str = "none", rule: str = "sum_mean") -> Tuple[List[Link], np.ndarray]:
    """Hard word links and the soft word-level matrix (target words x source words, ``</s>`` dropped).

    ``src_tokens`` ends with ``</s>``; ``tgt_tokens`` are the target tokens without the final ``</s>``.
    """
    check_choice("subword merge rule", rule, MERGE_RULES)
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape[1] != len(src_tokens):
        raise ValueError(f"attention has {matrix.shape[1]} columns for {len(src_tokens)} source tokens")
    has_eos = len(src_tokens) > 0 and src_tokens[-1] == "</s>"
    words = list(src_tokens[:-1]) if has_eos else list(src_tokens)
    rows = target_rows(matrix, len(tgt_tokens), shift)
    sw, tw = word_ids(words, src_style), word_ids(list(tgt_tokens), tgt_style)
    n_src = max(sw) + 1 if sw else 0
    body, eos = rows[:, : len(words)], rows[:, len(words):].sum(1, keepdims=True)
    if len(tgt_tokens) == 0:
        return [], np.zeros((0, n_src))
    word_matrix = _group(_group(body, sw, 1, "sum"), tw, 0, "mean")  # (Tw, Sw)
    word_eos = _group(eos, tw, 0, "mean")
    if rule == "sum_mean":
        full = np.concatenate([word_matrix, word_eos], 1)
        best = full.argmax(1)
        links = [(int(s), t) for t, s in enumerate(best) if s < n_src and full[t, s] > 0]
    else:
        full = np.concatenate([body, eos], 1)
        best = full.argmax(1)
        links = sorted({(sw[s], tw[t]) for t, s in enumerate(best) if s < len(words) and full[t, s] > 0})
    return links, word_matrix
