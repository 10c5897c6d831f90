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
