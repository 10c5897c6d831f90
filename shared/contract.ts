// Names that roles agree on (DESIGN.md "Events and leases"). Stream and bucket names are settings;
// these are not, because permissions in the NATS server configuration are written against them.

/** Watchers publish login events under this prefix, followed by their own id. */
export const LOGIN_SUBJECT_PREFIX = "relaylease.login";
export const LOGIN_SUBJECTS = `${LOGIN_SUBJECT_PREFIX}.>`;
/** The authorizers' shared durable consumer on the login stream. */
export const AUTHORIZER_DURABLE = "authorizer";

export function loginSubject(watcherId: string): string {
  return `${LOGIN_SUBJECT_PREFIX}.${watcherId}`;
}

/** The watcher id is the subject's last token, which the watcher's credentials are bound to. */
export function watcherOfSubject(subject: string): string | undefined {
  const prefix = `${LOGIN_SUBJECT_PREFIX}.`;
  if (!subject.startsWith(prefix)) return undefined;
  const id = subject.slice(prefix.length);
  return WATCHER_ID.test(id) ? id : undefined;
}

/** A single subject token: no dots, no wildcards, no whitespace. */
export const WATCHER_ID = /^[-\w]{1,64}$/;

/** The subject a KV key is stored under, for renewals published with a per-message TTL. */
export function kvSubject(bucket: string, key: string): string {
  return `$KV.${bucket}.${key}`;
}

/**
 * Bucket keys: a lease (or its revocation tombstone) under the address key (`v4.…`, `v6.…`, see
 * shared/address.ts), a user's revocation under `user.<base64url(name)>`, and the authorizers'
 * heartbeat, which lets a mirror tell a quiet bucket from a stalled watch.
 */
export const HEARTBEAT_KEY = "heartbeat";
/** How often each authorizer writes the heartbeat key. */
export const HEARTBEAT_INTERVAL_MS = 2000;

export function userKey(user: string): string {
  // base64url stays within the KV key alphabet and keeps any user name one token.
  return `user.${Buffer.from(user, "utf8").toString("base64url")}`;
}

export function isAddressKey(key: string): boolean {
  return key.startsWith("v4.") || key.startsWith("v6.");
}
