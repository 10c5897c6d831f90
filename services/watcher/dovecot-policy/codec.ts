/**
 * Dovecot auth policy requests (login-sources.md section 2; dovecot/core 2.3.19
 * src/auth/auth-policy.c). Pure: a request's query string and JSON body in, a login or the reason
 * there is none out, or a ProtocolError for a body that is not what Dovecot sends.
 *
 * Dovecot POSTs `?command=allow` (before/after auth) and `?command=report` (after auth) to
 * `auth_policy_server_url`. Only a report with `"success": true` for protocol `imap` or `pop3` is a
 * login: the same reports come for SMTP SASL (`smtp`), `submission` and `managesieve`, and for
 * failed passwords. `success` comes after the passdb and before the userdb, so it does not prove
 * the session started (a known limit of this source).
 *
 * Body: a JSON object built from `auth_policy_request_attributes` (keys sorted; every template
 * value a string, "" when unavailable; `a/b=` keys nested), then `success` and `policy_reject`
 * (reports only) and `tls`, all three booleans. Extra, reordered and nested keys are tolerated;
 * a known key of the wrong type is a ProtocolError. Fields used: `remote` (%{rip}: the client as a
 * trusted proxy forwarded it; IPv4-mapped becomes IPv4), `login` (%{requested_username}; `user`
 * is taken when a custom template names it so), `protocol`, `success`, `policy_reject`; `local`,
 * `tls` and `session_id` are decoded for logs.
 */
import { tryParseAddress } from "../../../shared/address.ts";
import { ProtocolError } from "../../../shared/protocol-error.ts";
import { USER_NAME } from "../../../shared/schema.ts";

export interface PolicyBody {
  readonly login: string | undefined;
  readonly remote: string | undefined;
  readonly local: string | undefined;
  readonly protocol: string | undefined;
  readonly success: boolean | undefined;
  readonly policyReject: boolean | undefined;
  readonly tls: boolean | undefined;
  readonly sessionId: string | undefined;
}

export type IgnoreReason =
  "not-report" | "failed" | "policy-reject" | "protocol" | "no-remote" | "bad-remote";

export type PolicyOutcome =
  | {
      readonly kind: "login";
      readonly report: { ip: string; user?: string; service: string; source: string };
    }
  | { readonly kind: "ignored"; readonly reason: IgnoreReason };

export const DOVECOT_POLICY_SOURCE = "dovecot-policy";
/** The services whose logins a POP-before-SMTP lease is for. */
const LOGIN_PROTOCOLS: ReadonlySet<string> = new Set(["imap", "pop3"]);

/** The reply to every request: accept (`allow`) and nothing to say (`report`). */
export const POLICY_REPLY = '{"status":0,"msg":""}';

/** `command` from a request target such as `/?command=report` or `/p?x=1&command=allow`. */
export function commandOf(target: string): string | undefined {
  const q = target.indexOf("?");
  if (q < 0) return undefined;
  return new URLSearchParams(target.slice(q + 1)).get("command") ?? undefined;
}

/** @throws ProtocolError if `text` is not a JSON object or a known field has the wrong type. */
export function parsePolicyBody(text: string): PolicyBody {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ProtocolError("policy request body is not JSON", { cause: err });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolError("policy request body is not a JSON object");
  }
  const o = value as Readonly<Record<string, unknown>>;
  return {
    login: str(o, "login") || str(o, "user") || undefined,
    remote: str(o, "remote") || undefined,
    local: str(o, "local") || undefined,
    protocol: str(o, "protocol") || undefined,
    success: bool(o, "success"),
    policyReject: bool(o, "policy_reject"),
    tls: bool(o, "tls"),
    sessionId: str(o, "session_id") || undefined,
  };
}

/** A string field: "" when absent (as Dovecot writes an unavailable value). */
function str(o: Readonly<Record<string, unknown>>, key: string): string {
  const v = o[key];
  if (v === undefined || v === null) return "";
  if (typeof v !== "string") throw new ProtocolError(`field "${key}" must be a string`);
  return v;
}

function bool(o: Readonly<Record<string, unknown>>, key: string): boolean | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw new ProtocolError(`field "${key}" must be a boolean`);
  return v;
}

/** Whether a request is a successful POP3/IMAP login, and if so the login to report. */
export function judgePolicyRequest(command: string | undefined, body: PolicyBody): PolicyOutcome {
  if (command !== "report") return { kind: "ignored", reason: "not-report" };
  if (body.success !== true) return { kind: "ignored", reason: "failed" };
  if (body.policyReject === true) return { kind: "ignored", reason: "policy-reject" };
  const service = body.protocol?.toLowerCase();
  if (service === undefined || !LOGIN_PROTOCOLS.has(service)) {
    return { kind: "ignored", reason: "protocol" };
  }
  if (body.remote === undefined) return { kind: "ignored", reason: "no-remote" };
  const ip = tryParseAddress(body.remote);
  if (ip === undefined) return { kind: "ignored", reason: "bad-remote" };
  // A user name we would not store is left out; the address is what the lease is for.
  const user = body.login !== undefined && USER_NAME.test(body.login) ? body.login : undefined;
  return {
    kind: "login",
    report: {
      ip: ip.text,
      ...(user === undefined ? {} : { user }),
      service,
      source: DOVECOT_POLICY_SOURCE,
    },
  };
}
