// onnxruntime-node 1.30 ships Microsoft's 1DS telemetry on Linux: every process that loads it
// writes /tmp/mat-debug-<pid>.log (never removed: thousands collect on a server) and stores events
// with a device id in ~/.cache/Microsoft/DeveloperTools/.onnxruntime/onnxruntime.db for upload.
// A library that runs on its users' servers and devices should not do that on their behalf, so
// refit sets onnxruntime's own switch, ORT_DISABLE_TELEMETRY=1, before onnxruntime-node loads,
// unless the variable is already set: ORT_DISABLE_TELEMETRY=0 keeps the telemetry on.
// (test/onnx/ort-telemetry.test.ts checks both in child processes.)

/** Set ORT_DISABLE_TELEMETRY=1 in this process's environment if it is unset. */
export function disableOrtTelemetry(): void {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  if (env && env.ORT_DISABLE_TELEMETRY === undefined) env.ORT_DISABLE_TELEMETRY = '1';
}

disableOrtTelemetry();
