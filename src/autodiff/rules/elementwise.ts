// Gradient rules: elementwise (being written).
export {};
