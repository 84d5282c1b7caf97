#!/usr/bin/env python3
"""PyTorch side of bench/transformers.ts: a nanoGPT-style decoder, a BERT-style encoder and an HF
Llama-structured decoder (the classes of test/fixtures/zoo/make_zoo.py) at bench size, and the same
Llama at SmolLM-135M's shape (`smollm`, 134.5M parameters, lm_head tied), exported to
ONNX the way users export them (opset 14, dynamic batch and sequence axes; the Llama as
onnx-community ships it, with past_key_values inputs and present outputs), and timed here on the
same weights and inputs (the Llama without a cache, as refit trains it); and a BERT encoder at
all-MiniLM-L6-v2's shape exported for feature-extraction (`minilm`), trained with
sentence-transformers' MultipleNegativesRankingLoss.

Debian's system python (torch 1.13):
    /usr/bin/python3 bench/transformers_torch.py --export tmp/transformer-models [--only smollm]
    /usr/bin/python3 bench/transformers_torch.py --run gpt lora --models tmp/transformer-models [--reps 5] [--warmup 2]

--run prints one JSON line: ms (median of reps), times, first_ms, peak_rss_mb, loss (before any
update), trainable (parameters the step updates). Inputs come from tokens() below, which
bench/transformers.ts computes the same way.
"""
import argparse
import json
import os
import resource
import sys
import time
import warnings

import torch
from torch_blas import require_fast_blas  # noqa: E402
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "fixtures", "zoo"))
from make_zoo import GPT, Bert, LlamaForCausalLM, export_kv, llama_kv_io  # noqa: E402

warnings.filterwarnings("ignore")
THREADS = 2
# Sizes a 2-core machine steps in well under a second; the same in bench/transformers.ts.
MODELS = {
    "gpt": dict(vocab=2048, block=128, d=256, heads=4, layers=4, batch=8, seq=128),
    "bert": dict(vocab=4096, max_pos=128, d=256, heads=4, layers=4, ffn=1024, batch=16, seq=128, labels=2),
    "llama": dict(vocab=2048, d=256, heads=4, kv_heads=2, layers=4, ffn=704, batch=8, seq=128),
    # SmolLM-135M's shape (HF config: hidden 576, 30 layers, 9 heads, 3 key-value heads,
    # intermediate 1536, vocab 49152, tied embeddings, initializer_range 0.02), random weights.
    "smollm": dict(vocab=49152, d=576, heads=9, kv_heads=3, layers=30, ffn=1536, batch=4, seq=128, tie=True, std=0.02),
    # all-MiniLM-L6-v2's shape (HF config: hidden 384, 6 layers, 12 heads, intermediate 1536, vocab
    # 30522, 512 positions), exported for feature-extraction (last_hidden_state) and trained as
    # sentence-transformers trains it: MultipleNegativesRankingLoss on `batch` (anchor, positive) pairs.
    "minilm": dict(vocab=30522, max_pos=512, d=384, heads=12, layers=6, ffn=1536, batch=16, seq=64, std=0.02),
}
LLAMAS = ("llama", "smollm")


class FeatureExtractor(Bert):
    """BertModel as a feature-extraction export has it: the token states, no pooler or head."""

    def __init__(self, c):
        super().__init__(c["vocab"], c["max_pos"], c["d"], c["heads"], c["layers"], c["ffn"])
        del self.pooler, self.classifier
        for n, p in self.named_parameters():
            if n.endswith("weight") and p.dim() == 2:
                nn.init.normal_(p, 0.0, c["std"])

    def forward(self, input_ids, token_type_ids, attention_mask):
        return self.encode(input_ids, token_type_ids, self.position_ids[:, :input_ids.size(1)], attention_mask)


def mnrl(h, mask, scale=20.0):
    """sentence-transformers' MultipleNegativesRankingLoss after mean pooling: the first half of
    the rows are anchors, the second their positives."""
    me = mask.unsqueeze(-1).to(h.dtype)
    e = (h * me).sum(1) / torch.clamp(me.sum(1), min=1e-9)
    b = e.shape[0] // 2
    a, p = F.normalize(e[:b], p=2, dim=1), F.normalize(e[b:], p=2, dim=1)
    return F.cross_entropy(a @ p.T * scale, torch.arange(b))


def build(name):
    c = MODELS[name]
    torch.manual_seed({"gpt": 21, "bert": 22, "llama": 23, "smollm": 24, "minilm": 25}[name])
    if name == "minilm":
        return FeatureExtractor(c)
    if name == "gpt":
        return GPT(c["vocab"], c["block"], c["d"], c["heads"], c["layers"])
    if name in LLAMAS:
        return LlamaForCausalLM(c["vocab"], c["d"], c["heads"], c["kv_heads"], c["layers"], c["ffn"], c.get("tie", False), c.get("std", 0.2))
    return Bert(c["vocab"], c["max_pos"], c["d"], c["heads"], c["layers"], c["ffn"], c["labels"])


def tokens(n, vocab, seed):
    """Token i = (i * 7919 + seed * 104729) mod vocab: no storage, and exact in JavaScript numbers."""
    return torch.tensor([(i * 7919 + seed * 104729) % vocab for i in range(n)], dtype=torch.long)


def inputs(name):
    c = MODELS[name]
    B, T = c["batch"], c["seq"]
    if name == "gpt":
        idx = tokens(B * T, c["vocab"], 1).view(B, T)
        labels = torch.full((B, T), -100, dtype=torch.long)
        labels[:, :-1] = idx[:, 1:]  # next token; the last position has none
        return (idx,), labels
    if name in LLAMAS:
        idx = tokens(B * T, c["vocab"], 3).view(B, T)
        labels = torch.full((B, T), -100, dtype=torch.long)
        labels[:, :-1] = idx[:, 1:]
        return (idx, torch.ones(B, T, dtype=torch.long), torch.arange(T).repeat(B, 1)), labels
    if name == "minilm":  # 2B rows: B anchors, then their B positives; every third row padded after 40 tokens
        ids = tokens(2 * B * T, c["vocab"], 6).view(2 * B, T)
        am = torch.ones(2 * B, T, dtype=torch.long)
        am[::3, 40:] = 0
        ids[am == 0] = 0
        return (ids, torch.zeros(2 * B, T, dtype=torch.long), am), am
    ids = tokens(B * T, c["vocab"], 2).view(B, T)
    tt = torch.zeros(B, T, dtype=torch.long)
    tt[:, T // 2:] = 1
    am = torch.ones(B, T, dtype=torch.long)
    am[1::2, T - 8:] = 0  # odd sequences are padded
    labels = torch.tensor([i % 2 for i in range(B)], dtype=torch.long)
    return (ids, tt, am), labels


def loss_of(name, logits, labels):
    if name == "minilm":  # `labels` is the attention mask; `logits` the token states
        return mnrl(logits, labels)
    if name in ("gpt", *LLAMAS):
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    return F.cross_entropy(logits, labels)


class LoRALinear(nn.Module):
    """y = base(x) + (x Aᵀ) Bᵀ · alpha/r, A ~ N(0, 1/r)·… and B = 0 (PEFT's default init: the first
    loss is the base model's)."""

    def __init__(self, base, r=8, alpha=8):
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.randn(r, base.in_features) / r)
        self.B = nn.Parameter(torch.zeros(base.out_features, r))
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + (x @ self.A.t()) @ self.B.t() * self.scale


def add_lora(model):
    for p in model.parameters():
        p.requires_grad_(False)
    for mod in list(model.modules()):
        for child_name, child in list(mod.named_children()):
            # As refit's target rule: layers with both sides ≥ the rank (not BERT's 2-label classifier).
            if isinstance(child, nn.Linear) and min(child.in_features, child.out_features) >= 8:
                setattr(mod, child_name, LoRALinear(child))
    return [p for p in model.parameters() if p.requires_grad]


def export(out, names):
    os.makedirs(out, exist_ok=True)
    for name in names:
        m = build(name).eval()
        args, _ = inputs(name)
        if name in LLAMAS:
            export_llama(m, name, os.path.join(out, f"{name}.onnx"))
            torch.save(m.state_dict(), os.path.join(out, f"{name}.pt"))
            print(f"exported {name}: {sum(p.numel() for p in m.parameters())} parameters")
            continue
        seq = {0: "batch", 1: "sequence"}
        names = ["idx"] if name == "gpt" else ["input_ids", "token_type_ids", "attention_mask"]
        axes = {n: seq for n in names}
        output = "last_hidden_state" if name == "minilm" else "logits"
        axes[output] = seq if name in ("gpt", "minilm") else {0: "batch"}
        torch.onnx.export(m, args, os.path.join(out, f"{name}.onnx"), opset_version=14, input_names=names,
                          output_names=[output], dynamic_axes=axes, do_constant_folding=True)
        torch.save(m.state_dict(), os.path.join(out, f"{name}.pt"))
        print(f"exported {name}: {sum(p.numel() for p in m.parameters())} parameters")


def export_llama(m, name, path):
    """As onnx-community's model.onnx: past_key_values inputs, present outputs, traced with a past of 3."""
    c = MODELS[name]
    L, hd = c["layers"], c["d"] // c["heads"]
    gen = torch.Generator().manual_seed(4)
    past = [torch.randn(2, c["kv_heads"], 3, hd, generator=gen) for _ in range(2 * L)]
    export_kv(m, (tokens(10, c["vocab"], 5).view(2, 5), torch.ones(2, 8, dtype=torch.long), torch.arange(3, 8).repeat(2, 1), *past), path,
              *llama_kv_io(L), 14)


def run(name, config, models, reps, warmup):
    torch.set_num_threads(THREADS)
    require_fast_blas()  # refuse to time PyTorch on the reference BLAS (torch_blas.py)
    m = build(name)
    m.load_state_dict(torch.load(os.path.join(models, f"{name}.pt")))
    args, labels = inputs(name)
    loss0 = None
    if config == "infer":
        m.eval()

        def call():
            with torch.no_grad():
                m(*args)
        trainable = 0
    else:
        m.train()  # no dropout in these models; train mode as a trainer has it
        params = add_lora(m) if config == "lora" else [p for p in m.parameters()]
        trainable = sum(p.numel() for p in params)
        opt = torch.optim.SGD(params, lr=1e-3)

        def call():
            nonlocal loss0
            opt.zero_grad(set_to_none=True)
            loss = loss_of(name, m(*args), labels)
            loss.backward()
            opt.step()
            if loss0 is None:
                loss0 = float(loss)
    t = time.perf_counter()
    call()
    first = (time.perf_counter() - t) * 1000
    for _ in range(warmup):
        call()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1000)
    s = sorted(times)
    ms = s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
    print(json.dumps(dict(ms=ms, times=times, first_ms=first, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                          loss=loss0, trainable=trainable, torch=torch.__version__)))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--export")
    ap.add_argument("--only", default=",".join(MODELS), help="the models --export writes")
    ap.add_argument("--run", nargs=2)
    ap.add_argument("--models", default=os.path.join(HERE, "..", "tmp", "transformer-models"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    if a.export:
        export(a.export, a.only.split(","))
    if a.run:
        run(a.run[0], a.run[1], a.models, a.reps, a.warmup)
