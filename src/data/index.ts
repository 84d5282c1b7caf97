/**
 * refit's data layer: IDX reading, the bundled Fashion-MNIST test set, 15 common
 * corruptions at 5 severities, test-time stream scenarios, MNIST digits from the `mnist` package,
 * and a classifier's predictions and accuracy.
 * (Node-only file access lives in idx-node.ts, fashion-mnist.ts and mnist.ts.)
 */
export * from './idx.ts';
export * from './idx-node.ts';
export * from './fashion-mnist.ts';
export * from './random.ts';
export * from './corruptions/index.ts';
export * from './streams.ts';
export * from './mnist.ts';
export * from './evaluate.ts';
