/**
 * refit's data layer: IDX reading, the bundled Fashion-MNIST test set, 15 common
 * corruptions at 5 severities, and test-time stream scenarios.
 * (Node-only file access lives in idx-node.ts and fashion-mnist.ts.)
 */
export * from './idx.ts';
export * from './idx-node.ts';
export * from './fashion-mnist.ts';
export * from './random.ts';
export * from './corruptions/index.ts';
export * from './streams.ts';
