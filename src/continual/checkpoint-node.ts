// Checkpoint files on disk: written atomically (a failed save keeps the old file).
import { readFileSync, existsSync } from 'node:fs';
import { writeFileAtomic } from '../onnx/io.ts';
import type { ContinualController } from './controller.ts';
import { encodeCheckpoint, decodeCheckpoint } from './checkpoint.ts';

export function saveCheckpoint(controller: ContinualController, path: string): void {
  writeFileAtomic(path, encodeCheckpoint(controller.model, controller.state()));
}

export function loadCheckpoint(controller: ContinualController, path: string): void {
  if (!existsSync(path)) throw new Error(`checkpoint not found: ${path}`);
  const b = readFileSync(path);
  controller.load(decodeCheckpoint(controller.model, new Uint8Array(b.buffer, b.byteOffset, b.byteLength), path));
}
