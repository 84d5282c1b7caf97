"""A text classifier refit did not build, and text streams that shift: real sentences, corrupted.

Data: the `fortunes` Debian package (apt-get install fortunes), six of its categories as classes
(computers, definitions, politics, science, songs-poems, zippy), split 70/10/20 by a seeded
shuffle. Tokens: lower-cased words and punctuation, a vocabulary of the training split's tokens
seen at least twice ([PAD] 0, [UNK] 1, [CLS] 2), sequences of at most 64 ids, [CLS] first, padded
with 0.

Model: a BERT-style encoder in Hugging Face BertForSequenceClassification's layout (word,
position and token-type embeddings, post-LN layers, an additive attention mask, a tanh pooler on
[CLS]), trained here with AdamW and exported to ONNX with input_ids, token_type_ids and
attention_mask (dynamic batch and sequence axes), as transformers.js users get them.

Shifts (the text counterpart of Fashion-MNIST-C, applied to the raw text before tokenizing, a
seeded RNG per split and corruption): typos (one edit in a word), leetspeak (a→4, e→3, i→1, o→0,
s→5, t→7), dropped words, and locally shuffled word order, each at severity 1–5.

Writes to bench/models/text (gitignored): fortunes-bert.onnx, vocab.json, train-clean.npy and
train-labels.npy (the first 1000 training fortunes, in-distribution data), and for the val and test
splits <split>-clean.npy, <split>-<corruption>-<severity>.npy (int64 ids [n, 64]) and
<split>-labels.npy; then <split>-stream.npy / <split>-stream-labels.npy: clean, then each
corruption at severity 5 in turn, each segment the whole split in a seeded order.

Run with Debian's python (torch, onnx): /usr/bin/python3 bench/text/make_fortunes.py
"""
import json
import os
import random
import re
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "test", "fixtures", "zoo"))
from make_zoo import BertLayer  # noqa: E402  (HF BertLayer, the zoo's; trained here with dropout)

FORTUNES = "/usr/share/games/fortunes"
CLASSES = ["computers", "definitions", "politics", "science", "songs-poems", "zippy"]
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "text")
MAX_LEN = 64
PAD, UNK, CLS = 0, 1, 2
CORRUPTIONS = ["typo", "leet", "drop", "shuffle"]
SEVERITY = [0.1, 0.2, 0.3, 0.45, 0.6]  # per-word (typo, drop), per-letter (leet) probability
SHUFFLE_WINDOW = [2, 3, 4, 6, 8]
TOKEN = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")


def read_category(name):
    with open(os.path.join(FORTUNES, name), encoding="utf-8", errors="replace") as f:
        items = f.read().split("\n%\n")
    return [" ".join(t.split()) for t in items if t.strip()]


def tokens(text):
    return TOKEN.findall(text.lower())


# --- corruptions (on raw text) ---------------------------------------------------------------
LETTERS = "abcdefghijklmnopqrstuvwxyz"
LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"}


def typo(word, rng):
    i = rng.randrange(len(word))
    kind = rng.randrange(4)
    if kind == 0 and len(word) > 1:
        i = min(i, len(word) - 2)
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1 and len(word) > 1:
        return word[:i] + word[i + 1:]
    if kind == 2:
        return word[:i] + rng.choice(LETTERS) + word[i:]
    return word[:i] + rng.choice(LETTERS) + word[i + 1:]


def corrupt(text, kind, severity, rng):
    words = text.split()
    p = SEVERITY[severity - 1]
    if kind == "typo":
        words = [typo(w, rng) if len(w) >= 3 and rng.random() < p else w for w in words]
    elif kind == "leet":
        words = ["".join(LEET[c] if c in LEET and rng.random() < p else c for c in w) for w in words]
    elif kind == "drop":
        kept = [w for w in words if rng.random() >= p]
        words = kept or words[:1]
    elif kind == "shuffle":
        k = SHUFFLE_WINDOW[severity - 1]
        out = []
        for s in range(0, len(words), k):
            chunk = words[s:s + k]
            rng.shuffle(chunk)
            out += chunk
        words = out
    else:
        raise ValueError(kind)
    return " ".join(words)


# --- the model -------------------------------------------------------------------------------
class Bert(nn.Module):
    def __init__(self, vocab, d=64, heads=4, layers=2, ffn=256, labels=len(CLASSES), dropout=0.1):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, d)
        self.position_embeddings = nn.Embedding(MAX_LEN, d)
        self.token_type_embeddings = nn.Embedding(2, d)
        self.embeddings_norm = nn.LayerNorm(d, eps=1e-12)
        self.register_buffer("position_ids", torch.arange(MAX_LEN).expand((1, -1)))
        self.layers = nn.ModuleList([BertLayer(d, heads, ffn, dropout) for _ in range(layers)])
        self.pooler = nn.Linear(d, d)
        self.classifier = nn.Linear(d, labels)
        self.drop = nn.Dropout(dropout)

    def forward(self, input_ids, token_type_ids, attention_mask):
        position_ids = self.position_ids[:, :input_ids.size(1)]
        e = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)
        h = self.drop(self.embeddings_norm(e))
        mask = (1.0 - attention_mask[:, None, None, :].to(dtype=h.dtype)) * torch.finfo(h.dtype).min
        for layer in self.layers:
            h = layer(h, mask)
        return self.classifier(self.drop(torch.tanh(self.pooler(h[:, 0]))))


def encode(texts, vocab):
    ids = np.zeros((len(texts), MAX_LEN), dtype=np.int64)
    for i, t in enumerate(texts):
        row = [CLS] + [vocab.get(w, UNK) for w in tokens(t)][:MAX_LEN - 1]
        ids[i, :len(row)] = row
    return ids


def feeds(ids):
    x = torch.from_numpy(ids)
    return x, torch.zeros_like(x), (x != PAD).long()


def accuracy(model, ids, labels):
    model.eval()
    with torch.no_grad():
        return float((model(*feeds(ids)).argmax(1).numpy() == labels).mean())


def train(model, enc, epochs):
    """AdamW, batch 32; keeps the weights of the epoch with the best validation accuracy."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    xtr, ytr = enc["train"]
    best, best_state = -1.0, None
    for epoch in range(epochs):
        model.train()
        perm = np.random.RandomState(epoch).permutation(len(xtr))
        for s in range(0, len(perm), 32):
            b = perm[s:s + 32]
            loss = F.cross_entropy(model(*feeds(xtr[b])), torch.from_numpy(ytr[b]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        va = accuracy(model, *enc["val"])
        print(f"epoch {epoch + 1}: val accuracy {va:.3f}", flush=True)
        if va > best:
            best, best_state = va, {k: v.clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    return best


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    rng = random.Random(0)
    data = [(t, c) for c, name in enumerate(CLASSES) for t in read_category(name)]
    rng.shuffle(data)
    n = len(data)
    split = {"train": data[:int(0.7 * n)], "val": data[int(0.7 * n):int(0.8 * n)], "test": data[int(0.8 * n):]}
    counts = {}
    for t, _ in split["train"]:
        for w in tokens(t):
            counts[w] = counts.get(w, 0) + 1
    words = sorted(w for w, k in counts.items() if k >= 2)
    vocab = {"[PAD]": PAD, "[UNK]": UNK, "[CLS]": CLS, **{w: i + 3 for i, w in enumerate(words)}}
    with open(os.path.join(OUT, "vocab.json"), "w") as f:
        json.dump({"classes": CLASSES, "vocab": vocab}, f)
    enc = {k: (encode([t for t, _ in v], vocab), np.array([c for _, c in v], dtype=np.int64)) for k, v in split.items()}
    print(f"{n} fortunes in {len(CLASSES)} classes; train/val/test {[len(v) for v in split.values()]}; vocabulary {len(vocab)}", flush=True)

    model = Bert(len(vocab))
    weights = os.path.join(OUT, "fortunes-bert.pt")
    if os.path.exists(weights):  # trained before: only the export and the streams are redone
        saved = torch.load(weights)
        model.load_state_dict(saved["state"])
        best = saved["val_accuracy"]
    else:
        best = train(model, enc, epochs=20)
        torch.save({"state": model.state_dict(), "val_accuracy": best}, weights)
    model.eval()
    print(f"best val accuracy {best:.3f}; test accuracy {accuracy(model, *enc['test']):.3f}", flush=True)

    x, tt, am = feeds(enc["val"][0][:4])
    seq = {0: "batch", 1: "sequence"}
    torch.onnx.export(model, (x, tt, am), os.path.join(OUT, "fortunes-bert.onnx"), input_names=["input_ids", "token_type_ids", "attention_mask"],
                      output_names=["logits"], dynamic_axes={"input_ids": seq, "token_type_ids": seq, "attention_mask": seq, "logits": {0: "batch"}},
                      opset_version=14)

    # In-distribution data for calibration (an entropy reference, EATA's Fisher): the first 1000 training fortunes.
    np.save(os.path.join(OUT, "train-clean.npy"), enc["train"][0][:1000])
    np.save(os.path.join(OUT, "train-labels.npy"), enc["train"][1][:1000])
    summary = {"classes": CLASSES, "sizes": {k: len(v) for k, v in split.items()}, "vocabulary": len(vocab), "val_accuracy": best, "test": {}}
    for name in ["val", "test"]:
        texts = [t for t, _ in split[name]]
        ids, labels = enc[name]
        np.save(os.path.join(OUT, f"{name}-clean.npy"), ids)
        np.save(os.path.join(OUT, f"{name}-labels.npy"), labels)
        segments = [(ids, labels)]
        for ci, kind in enumerate(CORRUPTIONS):
            for sev in range(1, 6):
                r = random.Random(1000 * (name == "test") + 10 * ci + sev)
                cids = encode([corrupt(t, kind, sev, r) for t in texts], vocab)
                np.save(os.path.join(OUT, f"{name}-{kind}-{sev}.npy"), cids)
                if name == "test":
                    summary["test"][f"{kind}-{sev}"] = accuracy(model, cids, labels)
                if sev == 5:
                    segments.append((cids, labels))
        order = np.random.RandomState(7 if name == "test" else 3)
        perms = [order.permutation(len(labels)) for _ in segments]
        np.save(os.path.join(OUT, f"{name}-stream.npy"), np.concatenate([s[0][p] for s, p in zip(segments, perms)]))
        np.save(os.path.join(OUT, f"{name}-stream-labels.npy"), np.concatenate([s[1][p] for s, p in zip(segments, perms)]))
    summary["test"]["clean"] = accuracy(model, *enc["test"])
    with open(os.path.join(OUT, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary["test"]), flush=True)


if __name__ == "__main__":
    sys.exit(main())
