// LoRA's options, defaults and validation (Hu et al. 2021, https://arxiv.org/abs/2106.09685).
import { z } from 'zod';
import type { TargetOptions } from '../sites.ts';
import { PeftError } from '../errors.ts';

export interface LoraConfig extends TargetOptions {
  /** Rank r of ΔW = B·A. @default 8 (HF PEFT) */
  rank?: number;
  /** Scaling numerator: ΔW is multiplied by alpha/r (or alpha/√r with rsLora). @default 8 (HF PEFT `lora_alpha`) */
  alpha?: number;
  /**
   * Dropout on the adapter's input. Recorded in the config and saved as `lora_dropout`; the
   * compiled step is deterministic, so it is the identity in refit's graphs (training included).
   * @default 0
   */
  dropout?: number;
  /** rsLoRA: scale by alpha/√r, which keeps updates stable as r grows. @default false @see https://arxiv.org/abs/2312.03732 */
  rsLora?: boolean;
  /**
   * `'kaiming'`: A ~ Kaiming-uniform, B = 0, so the adapter starts as a no-op (the paper's init).
   * `'pissa'`: A and B from the top-r singular triplets of W, and the residual W − scale·B·A
   * replaces W (Meng et al. 2024, https://arxiv.org/abs/2404.02948).
   * @default 'kaiming'
   */
  init?: 'kaiming' | 'pissa';
  /** LoRA+: B's learning rate is this many times A's (Hayou et al. 2024 suggest 16). @see https://arxiv.org/abs/2402.12354 */
  loraPlusRatio?: number;
  /** @default 0 */
  seed?: number;
}

export type ResolvedLora = Required<Omit<LoraConfig, 'loraPlusRatio' | 'opTypes'>> & Pick<LoraConfig, 'loraPlusRatio' | 'opTypes'>;

const schema = z.object({
  rank: z.number().int().positive(),
  alpha: z.number().positive(),
  dropout: z.number().min(0).lt(1),
  rsLora: z.boolean(),
  init: z.enum(['kaiming', 'pissa']),
  loraPlusRatio: z.number().positive().optional(),
  seed: z.number().int(),
});

export function resolveLora(c: LoraConfig, method = 'lora'): ResolvedLora {
  const r: ResolvedLora = { rank: 8, alpha: 8, dropout: 0, rsLora: false, init: 'kaiming', seed: 0, ...c };
  const res = schema.safeParse(r);
  if (!res.success) {
    const i = res.error.issues[0]!;
    throw new PeftError(`${method}: option '${i.path.join('.')}' ${i.message} (got ${JSON.stringify((r as unknown as Record<string, unknown>)[String(i.path[0])])})`);
  }
  return r;
}

export const loraScale = (c: { alpha: number; rank: number; rsLora: boolean }) => c.rsLora ? c.alpha / Math.sqrt(c.rank) : c.alpha / c.rank;
