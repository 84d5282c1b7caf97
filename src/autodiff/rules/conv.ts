// Gradient rules: conv (being written).
export {};
