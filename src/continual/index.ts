// Keeping a model fitted over time: fast and slow learners, delayed labels, error memory and
// the escalation controller (issue 11). Data flows in from src/tta, src/peft and src/drift.
export { ContinualController, LEVEL_NAMES, type Level, type ControllerOptions, type ControllerEvent, type ControllerResult, type ControllerState, type BatchSignals } from './controller.ts';
export { ContinualAdapter } from './adapter.ts';
export { recommendedControllerOptions, type RecommendedInputs } from './recommended.ts';
export { FastSlowLearner, LAE_EMA_DECAY, COTTA_RESTORE_PROBABILITY, type FastSlowOptions, type FastSlowState } from './fast-slow.ts';
export { FeedbackBuffer, type FeedbackReport } from './feedback.ts';
export { ReplayBuffer } from './replay.ts';
export { ErrorMemory, ERROR_MEMORY_DEFAULTS, type ErrorMemoryOptions } from './error-memory.ts';
export { PriorCorrection } from './prior-correction.ts';
export { encodeCheckpoint, decodeCheckpoint, modelFingerprint } from './checkpoint.ts';
