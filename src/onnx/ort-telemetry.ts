// onnxruntime-node 1.30 ships Microsoft's 1DS telemetry on Linux: every process that loads it
// writes /tmp/mat-debug-<pid>.log (never removed: thousands collect on a server) and stores events
// with a device id in ~/.cache/Microsoft/DeveloperTools/.onnxruntime/onnxruntime.db for upload.
// A library that runs on its users' servers and devices should not do that on their behalf, so
// refit sets onnxruntime's own switch, ORT_DISABLE_TELEMETRY=1, before onnxruntime-node loads,
// unless the variable is already set: ORT_DISABLE_TELEMETRY=0 keeps the telemetry on. (onnxruntime
// itself stays off when it sees a CI variable such as CI or GITHUB_ACTIONS, so a CI run never shows it.)
// (test/onnx/ort-telemetry.test.ts checks both in child processes.)

// Imported for this side effect, ahead of onnxruntime-node (runtime-node.ts, runtime.ts).
const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
if (env && env.ORT_DISABLE_TELEMETRY === undefined) env.ORT_DISABLE_TELEMETRY = '1';

export {};
