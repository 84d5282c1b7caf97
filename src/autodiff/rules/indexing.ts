// Gradient rules: indexing (being written).
export {};
