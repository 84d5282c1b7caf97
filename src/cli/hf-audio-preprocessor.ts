// A Hugging Face audio feature extractor's preprocessor_config.json for --task ctc: what
// Wav2Vec2FeatureExtractor does to raw audio before the model sees it. With do_normalize (true for
// wav2vec2-base-960h and most fine-tuned checkpoints) each utterance gets zero mean and unit
// variance, x ← (x − mean) / sqrt(var + 1e-7), as transformers' zero_mean_unit_var_norm computes it
// (over the whole row here: the CLI's rows carry no padding). Extractors that compute features
// (Whisper's and SeamlessM4T's log-mel) are refused: give their features as --data.
import { readPreprocessorConfig } from './hf-preprocessor.ts';

export interface AudioPreprocess {
  normalize: boolean;
  samplingRate?: number;
  summary: string;
}

export function readAudioPreprocessor(path: string): AudioPreprocess {
  const { file, config: c } = readPreprocessorConfig(path);
  const kind = typeof c.feature_extractor_type === 'string' ? c.feature_extractor_type : undefined;
  if (kind !== 'Wav2Vec2FeatureExtractor') {
    throw new Error(`--preprocessor ${file}: --task ctc follows Wav2Vec2FeatureExtractor (raw audio, optionally normalised); this is ${kind ?? 'not an audio feature extractor'}${kind && /Whisper|Seamless|Speech2Text/.test(kind) ? ', which computes log-mel features: give those features as --data' : ''}`);
  }
  if (c.do_normalize !== undefined && typeof c.do_normalize !== 'boolean') throw new Error(`--preprocessor ${file}: do_normalize must be true or false, got ${JSON.stringify(c.do_normalize)}`);
  const normalize = c.do_normalize !== false;
  const rate = typeof c.sampling_rate === 'number' ? c.sampling_rate : undefined;
  return { normalize, ...(rate ? { samplingRate: rate } : {}), summary: `${file}: ${normalize ? 'zero mean, unit variance per utterance' : 'audio as it is (do_normalize false)'}${rate ? `; the model expects ${rate} Hz audio` : ''}` };
}

/** Each row of `x` (n rows) to zero mean and unit variance, as transformers' zero_mean_unit_var_norm. */
export function normalizeRows(x: Float32Array, n: number): Float32Array {
  const per = x.length / n, out = new Float32Array(x.length);
  for (let r = 0; r < n; r++) {
    const row = x.subarray(r * per, (r + 1) * per);
    let mean = 0;
    for (const v of row) mean += v;
    mean /= per;
    let variance = 0;
    for (const v of row) variance += (v - mean) ** 2;
    const scale = 1 / Math.sqrt(variance / per + 1e-7);
    for (let i = 0; i < per; i++) out[r * per + i] = (row[i]! - mean) * scale;
  }
  return out;
}
