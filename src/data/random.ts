// The data layer's seeded randomness lives in src/util/rng.ts, refit's one generator; this
// module keeps the data layer's import path.
export { Rng, hashSeed, hashString, logGamma, type RngState } from '../util/rng.ts';
