// Gradient rules: pool (being written).
export {};
