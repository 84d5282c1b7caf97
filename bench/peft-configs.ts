// The configurations of the PEFT benchmark (bench/peft.ts): Fashion-MNIST → MNIST digits.
// Every configuration trains a new 10-class head (src/peft `head`, lr HEAD_LR) alongside its
// method; the body learning rate is per method, from the usual range of the method's paper.
import { lora, dora, vera, ia3, bitfit, normAffine, bottleneck, type AdapterMethod } from '../src/peft/index.ts';

export type BenchModel = 'vit' | 'cnn';

export interface BenchConfig {
  id: string;
  model: BenchModel;
  label: string;
  /** AdamW lr of the method's tensors (full fine-tuning: every base parameter). */
  lr: number;
  /** Where the lr comes from. */
  lrNote: string;
  /** The method's adapters (besides the new head); empty for 'head only' and full fine-tuning. */
  methods: () => AdapterMethod[];
  /** Full fine-tuning: every base parameter trains. */
  full?: boolean;
  /** CNN only: BatchNorm in training mode (batch statistics, running statistics updated). */
  bnTrain?: boolean;
}

/** The new head's lr in every configuration (a linear probe's usual AdamW lr). */
export const HEAD_LR = 1e-2;
export const WEIGHT_DECAY = 1e-2;

/** LoRA/DoRA/VeRA targets: every attention projection and both MLP layers of each block. */
export const ATTN_MLP = /attn\.(q|k|v|out)$|mlp\.fc[12]$/;

export const CONFIGS: BenchConfig[] = [
  { id: 'vit-full', model: 'vit', label: 'full fine-tuning', lr: 5e-4, lrNote: 'ViT fine-tuning range 1e-4–1e-3', methods: () => [], full: true },
  { id: 'vit-head', model: 'vit', label: 'head only (new head)', lr: HEAD_LR, lrNote: 'linear probe', methods: () => [] },
  { id: 'vit-lora4', model: 'vit', label: 'LoRA r=4, α=8, attn+MLP', lr: 2e-3, lrNote: 'LoRA 1e-4–2e-3 (α = 2r)', methods: () => [lora({ targets: ATTN_MLP, rank: 4, alpha: 8 })] },
  { id: 'vit-lora8', model: 'vit', label: 'LoRA r=8, α=16, attn+MLP', lr: 2e-3, lrNote: 'LoRA 1e-4–2e-3 (α = 2r)', methods: () => [lora({ targets: ATTN_MLP, rank: 8, alpha: 16 })] },
  { id: 'vit-lora8-qv', model: 'vit', label: 'LoRA r=8, α=16, attn q+v', lr: 2e-3, lrNote: 'LoRA 1e-4–2e-3 (α = 2r); W_q, W_v as in the LoRA paper', methods: () => [lora({ targets: /attn\.(q|v)$/, rank: 8, alpha: 16 })] },
  { id: 'vit-lora8-b01', model: 'vit', label: 'LoRA r=8, α=16, attn+MLP of blocks 0–1', lr: 2e-3, lrNote: 'LoRA 1e-4–2e-3 (α = 2r); the two blocks nearest the input', methods: () => [lora({ targets: /blocks\.[01]\.(attn\.(q|k|v|out)|mlp\.fc[12])$/, rank: 8, alpha: 16 })] },
  { id: 'vit-pissa8-qv', model: 'vit', label: 'LoRA r=8, α=16, PiSSA init, attn q+v', lr: 2e-3, lrNote: 'LoRA 1e-4–2e-3 (α = 2r)', methods: () => [lora({ targets: /attn\.(q|v)$/, rank: 8, alpha: 16, init: 'pissa' })] },
  { id: 'vit-pissa8-b01', model: 'vit', label: 'LoRA r=8, α=16, PiSSA init, attn+MLP of blocks 0–1', lr: 2e-3, lrNote: 'LoRA 1e-4–2e-3 (α = 2r)', methods: () => [lora({ targets: /blocks\.[01]\.(attn\.(q|k|v|out)|mlp\.fc[12])$/, rank: 8, alpha: 16, init: 'pissa' })] },
  { id: 'vit-dora8', model: 'vit', label: 'DoRA r=8, α=16, attn+MLP', lr: 2e-3, lrNote: 'as LoRA', methods: () => [dora({ targets: ATTN_MLP, rank: 8, alpha: 16 })] },
  { id: 'vit-vera', model: 'vit', label: 'VeRA r=256, attn+MLP', lr: 1e-2, lrNote: 'VeRA 4e-3–1e-2', methods: () => [vera({ targets: ATTN_MLP, rank: 256 })] },
  { id: 'vit-ia3', model: 'vit', label: '(IA)^3 k, v, fc2 input', lr: 3e-3, lrNote: 'T-Few 3e-3', methods: () => [ia3({ targets: /attn\.(k|v)$|mlp\.fc2$/, feedforward: /mlp\.fc2$/ })] },
  { id: 'vit-houlsby', model: 'vit', label: 'Houlsby adapters (attn out, fc2; reduction 16)', lr: 1e-3, lrNote: 'Houlsby 3e-5–3e-3', methods: () => [bottleneck({ form: 'houlsby', targets: /attn\.out$|mlp\.fc2$/ })] },
  { id: 'vit-bitfit', model: 'vit', label: 'BitFit', lr: 1e-3, lrNote: 'BitFit 1e-4–1e-3', methods: () => [bitfit()] },
  { id: 'cnn-full', model: 'cnn', label: 'full fine-tuning (BN train mode)', lr: 5e-4, lrNote: 'as the ViT', methods: () => [], full: true, bnTrain: true },
  { id: 'cnn-lora8', model: 'cnn', label: 'LoRA r=8, α=16, every conv', lr: 2e-3, lrNote: 'as the ViT', methods: () => [lora({ targets: /conv\d*$/, rank: 8, alpha: 16 })] },
  { id: 'cnn-norm', model: 'cnn', label: 'norm-affine (BN γ, β)', lr: 5e-3, lrNote: 'between BitFit and a probe', methods: () => [normAffine()] },
];
