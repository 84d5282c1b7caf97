// A model as onnxruntime's optimizer saves it (optimizedModelFilePath), the way many users ship
// models: the tests of models saved at 'basic', 'extended' or 'all' start from this.
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeModel, decodeModel } from '../../src/onnx/proto.ts';
import { ort } from '../../src/onnx/runtime.ts';
import type { Model } from '../../src/onnx/ir.ts';

export async function savedByOrt(m: Model, level: 'basic' | 'extended' | 'all'): Promise<Model> {
  const dir = mkdtempSync(join(tmpdir(), 'refit-ort-saved-'));
  try {
    const out = join(dir, 'opt.onnx');
    const s = await ort.InferenceSession.create(encodeModel(m), { graphOptimizationLevel: level, optimizedModelFilePath: out, executionProviders: ['cpu'], logSeverityLevel: 3 });
    await s.release();
    return decodeModel(new Uint8Array(readFileSync(out)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
