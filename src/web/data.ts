// refit's data layer for the browser: what src/data/index.ts offers without its Node file readers
// (idx-node.ts, fashion-mnist.ts, mnist.ts). Fetch IDX files and parse them with parseIdxImages/parseIdxLabels
// (gunzip .gz files first with gunzip from refit/web).
export * from '../data/idx.ts';
export * from '../data/random.ts';
export * from '../data/corruptions/index.ts';
export * from '../data/streams.ts';
export * from '../data/evaluate.ts';
