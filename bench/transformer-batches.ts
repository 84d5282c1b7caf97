// The transformer benches' models and batches (bench/transformers.ts, bench/prepack-ab.ts), as
// bench/transformers_torch.py builds them for PyTorch. No static import of src/: the benches'
// parent processes stay small (a child's peak RSS starts from its parent's, see prepack-ab.ts).
import type { Tensor } from '../src/onnx/tensor.ts';
import type { LossSpec } from '../src/train/loss-spec.ts';

// As bench/transformers_torch.py's MODELS.
export const TRANSFORMERS = {
  gpt: { vocab: 2048, batch: 8, seq: 128, label: 'nanoGPT-style decoder: vocab 2048, d 256, 4 heads, 4 layers, block 128 (3.7M parameters); batch 8 × 128 tokens' },
  bert: { vocab: 4096, batch: 16, seq: 128, label: 'BERT-style encoder (HF BertForSequenceClassification structure): vocab 4096, d 256, 4 heads, 4 post-LN layers, FFN 1024 (4.3M parameters), 2 labels; batch 16 × 128 tokens, odd sequences padded by 8' },
  llama: { vocab: 2048, batch: 8, seq: 128, label: 'HF Llama-structured decoder (RMSNorm, rotary, 4 query / 2 key-value heads, SwiGLU FFN 704), vocab 2048, d 256, 4 layers, untied head (3.8M parameters), exported with past_key_values inputs and trained without the cache; batch 8 × 128 tokens' },
  smollm: { vocab: 49152, batch: 4, seq: 128, label: 'the same Llama structure at SmolLM-135M\'s shape (d 576, 30 layers, 9 query / 3 key-value heads, FFN 1536, vocab 49152, lm_head tied to the embedding: 134.5M parameters, random weights with std 0.02), exported as the Llama; batch 4 × 128 tokens' },
  minilm: { vocab: 30522, batch: 16, seq: 64, label: 'BERT encoder at all-MiniLM-L6-v2\'s shape (d 384, 12 heads, 6 post-LN layers, FFN 1536, vocab 30522: 22.7M parameters, random weights with std 0.02) exported for feature-extraction (last_hidden_state); sentence-transformers\' MultipleNegativesRankingLoss (mean pooling, scale 20) on 16 pairs = 32 rows × 64 tokens, every third row padded after 40' },
} as const;
export type TransformerName = keyof typeof TRANSFORMERS;

/** Token i = (i·7919 + seed·104729) mod vocab, as transformers_torch.py's tokens(). */
export const tokens = (n: number, vocab: number, seed: number) => Array.from({ length: n }, (_, i) => (i * 7919 + seed * 104729) % vocab);

/** One batch with its labels, and the model's loss: next-token cross-entropy, BERT's classification, or MiniLM's in-batch negatives. */
export async function transformerBatch(name: TransformerName): Promise<{ feeds: Record<string, Tensor>; loss: LossSpec }> {
  const losses = await import('../src/train/losses.ts');
  const { i64 } = await import('../src/onnx/tensor.ts');
  const { batch: B, seq: T, vocab } = TRANSFORMERS[name];
  const feeds: Record<string, Tensor> = {};
  if (name === 'minilm') { // 2B rows: B anchors, then their positives; every third row padded after 40 tokens
    const mask = Array.from({ length: 2 * B * T }, (_, i) => (Math.floor(i / T) % 3 === 0 && i % T >= 40 ? 0 : 1));
    feeds.input_ids = i64([2 * B, T], tokens(2 * B * T, vocab, 6).map((t, i) => (mask[i] ? t : 0)));
    feeds.token_type_ids = i64([2 * B, T], new Array(2 * B * T).fill(0));
    feeds.attention_mask = i64([2 * B, T], mask);
    return { feeds, loss: losses.inBatchNegatives({ embeddings: 'last_hidden_state', mask: 'attention_mask' }) };
  }
  if (name === 'bert') {
    feeds.input_ids = i64([B, T], tokens(B * T, vocab, 2));
    feeds.token_type_ids = i64([B, T], Array.from({ length: B * T }, (_, i) => (i % T >= T / 2 ? 1 : 0)));
    feeds.attention_mask = i64([B, T], Array.from({ length: B * T }, (_, i) => (Math.floor(i / T) % 2 === 1 && i % T >= T - 8 ? 0 : 1)));
    feeds.labels = i64([B], Array.from({ length: B }, (_, i) => i % 2));
    return { feeds, loss: losses.crossEntropy({ logits: 'logits', labels: 'labels' }) };
  }
  const idx = tokens(B * T, vocab, name === 'gpt' ? 1 : 3);
  feeds[name === 'gpt' ? 'idx' : 'input_ids'] = i64([B, T], idx);
  if (name !== 'gpt') { // the Llama-structured ones
    feeds.attention_mask = i64([B, T], Array.from({ length: B * T }, () => 1));
    feeds.position_ids = i64([B, T], Array.from({ length: B * T }, (_, i) => i % T));
  }
  feeds.labels = i64([B, T], idx.map((_, i) => ((i + 1) % T === 0 ? -100 : idx[i + 1]!)));
  return { feeds, loss: losses.tokenCrossEntropy({ logits: 'logits', labels: 'labels' }) };
}
