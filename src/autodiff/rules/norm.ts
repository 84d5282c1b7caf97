// Gradient rules: norm (being written).
export {};
