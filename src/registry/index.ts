// The adapter registry: the interface (./types.ts) and its default SQLite store (Node-only).
export * from './types.ts';
export { SqliteRegistry, SCHEMA_VERSION, type SqliteRegistryOptions } from './sqlite.ts';
