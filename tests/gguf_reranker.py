"""Write a tiny reranker GGUF (bert with a classification head, pooling type rank) that llama.cpp runs.

Its weights are chosen, not trained, so that its scores mean something a test can check: attention is
uniform (zero queries), so the CLS position sees the mean of every token's embedding; the head then
scores how close that mean is to the embedding of "▁world" (every other token's embedding is orthogonal to
it). A document with a larger share of "world" scores higher, by margins far above float noise; the query
is read too and moves every document's score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf_factory import BYTE, CONTROL, NORMAL, SPECIALS, WORDS, vocabulary

EMBED, FFN, HEADS, CONTEXT = 32, 64, 4, 128
TOPIC = "▁world"
CLS_GAIN = 0.1  # keeps tanh near linear, so the score grows steadily with the topic's share
HEAD_SCALE = 20.0  # spreads the scores over a few units, so orders do not hinge on rounding


def _normed(rows: Any) -> Any:
    """Rows scaled to zero mean and unit variance, as llama.cpp's layer norm leaves them."""
    centred = rows - rows.mean(axis=-1, keepdims=True)
    return centred / np.sqrt((centred**2).mean(axis=-1, keepdims=True) + 1e-12)


def reranker_tensors(n_vocab: int, seed: int = 0) -> dict[str, Any]:
    """Return name -> float32 array (rows, cols) = ggml (ne1, ne0) for a one-layer bert reranker."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    token_embd = rng.standard_normal((n_vocab, EMBED))
    at = vocabulary().index(TOPIC)
    topic = token_embd[at] - token_embd[at].mean()
    # every other token's embedding is made orthogonal to the topic word's (after layer norm's centring)
    others = np.arange(n_vocab) != at
    token_embd[others] -= np.outer(token_embd[others] @ topic / (topic @ topic), topic)
    token_embd = token_embd.astype(f32)
    topic = _normed(topic)
    eye, ones, zeros = np.eye(EMBED, dtype=f32), np.ones(EMBED, dtype=f32), np.zeros(EMBED, dtype=f32)
    return {
        "token_embd.weight": token_embd,
        "token_types.weight": np.zeros((2, EMBED), dtype=f32),
        "position_embd.weight": np.zeros((CONTEXT, EMBED), dtype=f32),  # order does not matter here
        "token_embd_norm.weight": ones,
        "token_embd_norm.bias": zeros,
        # zero queries: every position attends to every token equally, so CLS holds their mean
        "blk.0.attn_q.weight": np.zeros((EMBED, EMBED), dtype=f32),
        "blk.0.attn_k.weight": (rng.standard_normal((EMBED, EMBED)) * 0.02).astype(f32),
        "blk.0.attn_v.weight": eye,
        "blk.0.attn_output.weight": eye,
        "blk.0.attn_output_norm.weight": ones,
        "blk.0.attn_output_norm.bias": zeros,
        # a feed-forward block that adds nothing: the residual carries the mean through
        "blk.0.ffn_up.weight": np.zeros((FFN, EMBED), dtype=f32),
        "blk.0.ffn_down.weight": np.zeros((EMBED, FFN), dtype=f32),
        "blk.0.layer_output_norm.weight": ones,
        "blk.0.layer_output_norm.bias": zeros,
        # the head: tanh(cls h), then one output along the topic word's embedding
        "cls.weight": eye * f32(CLS_GAIN),
        "cls.bias": zeros,
        "cls.output.weight": (topic * HEAD_SCALE / np.sqrt(EMBED)).astype(f32).reshape(1, EMBED),
        "cls.output.bias": np.zeros(1, dtype=f32),
    }


def reference_score(tokens: list[int], seed: int = 0) -> float:
    """The fixture's score for a formatted pair, computed here in numpy from the same weights (what
    llama.cpp's bert graph and rank pooling do with them): the first output of the head over CLS."""
    t = reranker_tensors(len(vocabulary()), seed)
    e = _normed(t["token_embd.weight"][tokens].astype(np.float64))
    mean = e.mean(axis=0)  # uniform attention, identity values and output
    cls = _normed(_normed(mean + e[0]))  # the residual, layer norm, a feed-forward adding 0, layer norm
    return float(t["cls.output.weight"][0] @ np.tanh(t["cls.weight"] @ cls))


def write_tiny_reranker(
    path: Path, *, seed: int = 0, rerank_template: str | None = None, declare_rank: bool = True
) -> Path:
    """Write the reranker: XLM-RoBERTa's specials (<s> query </s></s> document </s>) over the tests' SPM
    vocabulary; with `rerank_template`, a `tokenizer.chat_template.rerank` that formats the pair instead.
    Without `declare_rank` it declares no pooling type and names its one output, as llama.cpp's converter
    writes bge-reranker-v2-m3."""
    vocab = vocabulary()
    w = gguf.GGUFWriter(str(path), "bert")
    w.add_type("model")
    w.add_name("Tiny Reranker")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(EMBED)
    w.add_block_count(1)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_layer_norm_eps(1e-12)
    w.add_causal_attention(False)
    if declare_rank:
        w.add_pooling_type(gguf.PoolingType.RANK)
    else:
        w.add_classifier_output_labels(["LABEL_0"])
    w.add_file_type(0)
    w.add_tokenizer_model("llama")
    w.add_token_list(vocab)
    w.add_token_scores([0.0] * (3 + 256) + [-float(i) for i in range(len(WORDS))])
    w.add_token_types([CONTROL] * len(SPECIALS) + [BYTE] * 256 + [NORMAL] * len(WORDS))
    w.add_token_type_count(2)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_sep_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(True)
    w.add_add_sep_token(True)
    if rerank_template is not None:
        w.add_chat_template([{"name": "rerank", "template": rerank_template}])
    for name, data in reranker_tensors(len(vocab), seed).items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
