"""A language model refit did not build, exported as transformers.js users get decoders, and text
whose topic shifts: for dynamic evaluation (src/tta/dynamic-eval.ts, bench/text/dynamic-eval.ts).

Data: the `fortunes` Debian package (apt-get install fortunes). Source: twenty of its categories
(SOURCE below), split 90/10 by a seeded shuffle. Two shifted streams from categories the model
never saw, disjoint from each other so that settings chosen on one say nothing about the other:
the validation stream (VAL_STREAM: startrek, food, riddles, tao) and the test stream (TEST_STREAM:
zippy, songs-poems, linux, pratchett), each category a segment of at most 320 fortunes in a seeded
order. Tokens as make_fortunes.py: lower-cased words and punctuation; the vocabulary is the source
training split's tokens seen at least three times ([PAD] 0, [UNK] 1, [BOS] 2); a sequence is
[BOS] and at most 63 tokens, padded with 0.

Model: HF LlamaForCausalLM's structure (test/fixtures/zoo/make_zoo.py's class: RMSNorm, rotary
embeddings, 4 query / 2 key-value heads, SwiGLU), d 128, 2 layers, trained here with AdamW on the
source split's next-token loss, and exported as onnx-community ships decoders: input_ids,
attention_mask, position_ids and past_key_values.* inputs, logits and present.* outputs.

Writes to bench/models/text (gitignored): fortunes-llama.onnx, lm-vocab.json, lm-source-val.npy
(held-out source fortunes), lm-val-stream.npy / lm-test-stream.npy (int64 ids [n, 64]) with
lm-<stream>-segments.json (category and row range of each segment), lm-summary.json.

Run with Debian's python (torch, onnx): /usr/bin/python3 bench/text/make_fortunes_lm.py
"""
import json
import os
import random
import sys
import time
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "test", "fixtures", "zoo"))
from make_fortunes import read_category, tokens, encode, OUT, CLS  # noqa: E402  (encode starts each row with id 2: [CLS] there, [BOS] here)
from make_zoo import LlamaForCausalLM, export_kv, llama_kv_io  # noqa: E402

SOURCE = ["computers", "definitions", "people", "work", "science", "politics", "wisdom", "humorists", "literature", "law",
          "education", "miscellaneous", "love", "men-women", "platitudes", "fortunes", "medicine", "sports", "pets", "news"]
VAL_STREAM = ["startrek", "food", "riddles", "tao"]
TEST_STREAM = ["zippy", "songs-poems", "linux", "pratchett"]
SEGMENT = 320
PAD, UNK, BOS = 0, 1, CLS
D, HEADS, KV_HEADS, LAYERS, FFN = 128, 4, 2, 2, 352
EPOCHS, BATCH, LR = 6, 32, 3e-3


def stream(categories, vocab, rng):
    ids, segments = [], []
    for c in categories:
        items = read_category(c)
        rng.shuffle(items)
        items = items[:SEGMENT]
        segments.append({"category": c, "start": sum(len(x) for x in ids), "rows": len(items)})
        ids.append(encode(items, vocab))
    return np.concatenate(ids), segments


def lm_loss(model, ids):
    x = torch.from_numpy(ids)
    mask = (x != PAD).long()
    pos = torch.arange(x.shape[1]).repeat(x.shape[0], 1)
    logits = model(x, mask, pos)
    y = torch.full_like(x, -100)
    y[:, :-1] = torch.where(x[:, 1:] == PAD, torch.full_like(x[:, 1:], -100), x[:, 1:])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    rng = random.Random(0)
    texts = [t for c in SOURCE for t in read_category(c)]
    rng.shuffle(texts)
    n_val = len(texts) // 10
    val_texts, train_texts = texts[:n_val], texts[n_val:]
    counts = Counter(w for t in train_texts for w in tokens(t))
    words = sorted(w for w, k in counts.items() if k >= 3)
    vocab = {"[PAD]": PAD, "[UNK]": UNK, "[BOS]": BOS}
    for w in words:
        vocab[w] = len(vocab)
    train, val = encode(train_texts, vocab), encode(val_texts, vocab)
    print(f"source: {len(train)} training and {len(val)} held-out fortunes, vocabulary {len(vocab)}")

    model = LlamaForCausalLM(len(vocab), D, HEADS, KV_HEADS, LAYERS, FFN)
    with torch.no_grad():  # HF's initializer range (the zoo class draws N(0, 0.2) for gradient fixtures)
        for n, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.02)
            else:
                p.fill_(1.0)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    steps = EPOCHS * (len(train) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.1)
    t0 = time.time()
    for epoch in range(EPOCHS):
        model.train()
        order = np.random.RandomState(epoch).permutation(len(train))
        for s in range(len(train) // BATCH):
            loss = lm_loss(model, train[order[s * BATCH:(s + 1) * BATCH]])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            vl = float(np.mean([float(lm_loss(model, val[i:i + 128])) for i in range(0, len(val), 128)]))
        print(f"epoch {epoch + 1}/{EPOCHS}: train loss {float(loss):.3f}, held-out source loss {vl:.3f} ({time.time() - t0:.0f} s)")

    srng = random.Random(1)
    val_stream, val_segments = stream(VAL_STREAM, vocab, srng)
    test_stream, test_segments = stream(TEST_STREAM, vocab, srng)
    os.makedirs(OUT, exist_ok=True)
    np.save(os.path.join(OUT, "lm-source-val.npy"), val)
    np.save(os.path.join(OUT, "lm-val-stream.npy"), val_stream)
    np.save(os.path.join(OUT, "lm-test-stream.npy"), test_stream)
    for name, seg in (("val", val_segments), ("test", test_segments)):
        with open(os.path.join(OUT, f"lm-{name}-stream-segments.json"), "w") as f:
            json.dump(seg, f, indent=1)
    with open(os.path.join(OUT, "lm-vocab.json"), "w") as f:
        json.dump(vocab, f)

    # Export as onnx-community ships decoders: with past_key_values inputs (traced with a past of 3).
    past = [torch.zeros(2, KV_HEADS, 3, D // HEADS) for _ in range(2 * LAYERS)]
    export_kv(model, (torch.full((2, 5), BOS), torch.ones(2, 8, dtype=torch.long), torch.arange(3, 8).repeat(2, 1), *past),
              os.path.join(OUT, "fortunes-llama.onnx"), *llama_kv_io(LAYERS), 14)
    model.eval()
    with torch.no_grad():
        per = {}
        for name, ids, segs in (("val", val_stream, val_segments), ("test", test_stream, test_segments)):
            for s in segs:
                part = ids[s["start"]: s["start"] + s["rows"]]
                per[f"{name}:{s['category']}"] = float(np.mean([float(lm_loss(model, part[i:i + 64])) for i in range(0, len(part), 64)]))
    summary = {"source": SOURCE, "val_stream": VAL_STREAM, "test_stream": TEST_STREAM, "vocabulary": len(vocab),
               "train": len(train), "source_val": len(val), "source_val_loss": vl, "static_loss_per_segment_torch": per,
               "model": {"d": D, "heads": HEADS, "kv_heads": KV_HEADS, "layers": LAYERS, "ffn": FFN,
                         "parameters": sum(p.numel() for p in model.parameters())},
               "training": {"epochs": EPOCHS, "batch": BATCH, "lr": LR, "seconds": round(time.time() - t0)}}
    with open(os.path.join(OUT, "lm-summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
