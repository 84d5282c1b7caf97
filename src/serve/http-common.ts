// What every refit HTTP service shares (`refit serve` and the fleet's cloud service): the JSON
// schema of a name path parameter, the error body, Fastify options that refuse unknown body
// fields with messages naming the field, a constant-time bearer check, and CORS for web pages.
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import cors from '@fastify/cors';
import { timingSafeEqual } from 'node:crypto';
import { Counter, Histogram, type Registry } from 'prom-client';
import { NAME_PATTERN } from '../registry/types.ts';

/**
 * NAME_PATTERN, and no '..' anywhere (checkName's rule), so a path parameter that could read as a
 * path step is refused by the schema (400) before any handler, store or registry sees it.
 */
export function nameSchema(maxLength = 128) {
  return { type: 'string', pattern: `^(?!.*\\.\\.)${NAME_PATTERN.source.slice(1)}`, maxLength } as const;
}

export const errorSchema = {
  type: 'object',
  properties: { statusCode: { type: 'integer' }, error: { type: 'string' }, message: { type: 'string' }, reason: { type: 'string', description: 'a short machine-readable cause (where the service gives one)' } },
} as const;

/** Fastify options of a refit service: body limit, long-enough name params, strict bodies, readable schema errors. */
export function serviceOptions(o: { bodyLimit: number; logger?: FastifyServerOptions['logger'] }): FastifyServerOptions {
  return {
    logger: o.logger ?? false,
    bodyLimit: o.bodyLimit,
    routerOptions: { maxParamLength: 128 }, // the longest name NAME_PATTERN allows (Fastify's default, 100, would answer 414 below it)
    // Unknown body fields are refused (a typo gets a 400), not silently dropped.
    ajv: { customOptions: { removeAdditional: false } },
    schemaErrorFormatter: (errors, dataVar) => new Error(errors.map((e) => {
      const at = `${dataVar}${e.instancePath.replace(/\//g, '.')}`;
      if (e.keyword === 'additionalProperties') return `${at} has an unknown field '${(e.params as { additionalProperty: string }).additionalProperty}'`;
      return `${at} ${e.message}`;
    }).join('; ')),
  };
}

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(header: string | string[] | undefined): string | undefined {
  const h = Array.isArray(header) ? header[0] : header;
  const m = /^Bearer ([\x21-\x7e]{1,512})$/.exec(h ?? '');
  return m ? m[1] : undefined;
}

/** Constant-time comparison of a presented token with the expected one. */
export function sameToken(got: string | undefined, expected: string): boolean {
  if (got === undefined) return false;
  const a = Buffer.from(got);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The per-route request counter and latency histogram every refit service exposes, on `registry`. */
export function httpMetrics(registry: Registry) {
  return {
    requests: new Counter({ name: 'refit_http_requests_total', help: 'HTTP requests by route template, method and status code', labelNames: ['route', 'method', 'status'] as const, registers: [registry] }),
    latency: new Histogram({
      name: 'refit_http_request_duration_seconds', help: 'HTTP request latency by route template and method', labelNames: ['route', 'method'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [registry],
    }),
  };
}

/**
 * Let web pages on `origins` (['https://app.example.com'], or '*' for any) call the service from a
 * browser (CORS, @fastify/cors): preflights answered, the Access-Control headers on every answer,
 * refusals included. Bearer tokens, never cookies: no credentials. Register it before any auth
 * hook, so a preflight (which carries no token) is answered before auth is asked.
 */
export async function allowOrigins(app: FastifyInstance, origins: string[] | '*', o: { methods: string[]; headers: string[]; who: string }): Promise<void> {
  if (origins !== '*' && !(Array.isArray(origins) && origins.length > 0 && origins.every((v) => typeof v === 'string' && /^https?:\/\/[^/]+$/.test(v)))) {
    throw new Error(`${o.who}: CORS origins must be '*' or origins like 'https://app.example.com' (scheme and host, no path), got ${JSON.stringify(origins)}`);
  }
  await app.register(cors, { origin: origins, methods: o.methods, allowedHeaders: o.headers, maxAge: 600 });
}
