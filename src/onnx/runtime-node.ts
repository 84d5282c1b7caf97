// Registers onnxruntime-node as refit's runtime. src/index.ts imports this; code that imports
// refit's modules directly gets the same backend on first use (runtime.ts loads it lazily in Node).
import './ort-telemetry.ts'; // before onnxruntime-node loads
import * as ort from 'onnxruntime-node';
import { nodeBackend, useRuntime } from './runtime.ts';

useRuntime(nodeBackend(ort));
