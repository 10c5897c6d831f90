/**
 * What a Dovecot auth policy request must carry to be believed (login-sources.md 2.2):
 * - `auth_policy_server_api_header`: Dovecot sends `Name: value` as that header, or a bare value
 *   as `X-API-Key: value`. Our setting takes the same text, so the two can be copied across.
 * - `user:pass@` in `auth_policy_server_url`: Dovecot sends HTTP Basic auth. Our setting is
 *   `user:password`.
 * Each configured credential must match; none configured admits everyone (keep the listener on
 * loopback then). Comparison is constant-time over SHA-256 digests, so neither the length nor
 * a prefix of the secret leaks through timing.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";

export interface PolicyCredentials {
  /** Lowercase header name and the value it must have. */
  readonly apiHeader: { readonly name: string; readonly value: string } | undefined;
  /** The whole `Authorization` value Dovecot will send, `Basic <base64(user:password)>`. */
  readonly basic: string | undefined;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * Parses the configured values.
 * @throws Error naming the accepted form, for the caller to prefix with the setting's name.
 */
export function parsePolicyCredentials(
  apiHeader: string | undefined,
  basicAuth: string | undefined,
): PolicyCredentials {
  return { apiHeader: parseApiHeader(apiHeader), basic: parseBasic(basicAuth) };
}

function parseApiHeader(raw: string | undefined): PolicyCredentials["apiHeader"] {
  if (raw === undefined) return undefined;
  const colon = raw.indexOf(":");
  const name = colon < 0 ? "X-API-Key" : raw.slice(0, colon).trim();
  const value = (colon < 0 ? raw : raw.slice(colon + 1)).trim();
  if (!TOKEN.test(name) || value === "" || /[\r\n\0]/.test(value)) {
    throw new Error('expected "Header-Name: value" or a bare value (sent as X-API-Key)');
  }
  return { name: name.toLowerCase(), value };
}

function parseBasic(raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  if (raw.indexOf(":") < 1 || /[\r\n\0]/.test(raw)) throw new Error('expected "user:password"');
  return `Basic ${Buffer.from(raw, "utf8").toString("base64")}`;
}

/** True if every configured credential is present and right. */
export function credentialsMatch(creds: PolicyCredentials, headers: IncomingHttpHeaders): boolean {
  let ok = true;
  if (creds.apiHeader !== undefined) {
    const got = headers[creds.apiHeader.name];
    ok = same(typeof got === "string" ? got.trim() : undefined, creds.apiHeader.value) && ok;
  }
  if (creds.basic !== undefined) ok = same(headers.authorization?.trim(), creds.basic) && ok;
  return ok;
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s, "utf8").digest();
}

function same(got: string | undefined, want: string): boolean {
  return timingSafeEqual(digest(got ?? ""), digest(want)) && got !== undefined;
}
