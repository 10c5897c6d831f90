/**
 * Keeps the leases of long POP/IMAP sessions alive (DESIGN.md "Long sessions"; login-sources.md
 * §7). From login and logout records it knows which sessions are open at which address; `due()`
 * names the addresses whose lease must be renewed before it runs out. No I/O, no timers: the
 * caller feeds records and asks `due(now)` on its own clock (every minute is plenty for a 30 min
 * TTL).
 *
 * - A login opens a session, keyed by its session id when the line has one (Dovecot, Cyrus),
 *   else anonymous (UW, Courier, qpopper): pop-before-smtp's per-address count.
 * - A logout closes the session with its id; without an id, the oldest open session at its
 *   address (with the same user, if given); without an address either (Dovecot before 2.3),
 *   the oldest with its user and service. A logout never opens anything; one that matches
 *   nothing is counted.
 * - Each address has a grant time: its latest login, or its latest renewal. It is due once
 *   `renewAfter` (2/3) of the TTL has passed since, and due() then takes the renewal as done
 *   (the caller publishes it through the durable outbox). Several sessions at one address make
 *   one renewal.
 * - A login's time is the line's `at` if it has one (capped at now), so a late-read login is
 *   renewed at once if its lease may already have run out.
 * Budget: at most `maxSessions` (100 000) open sessions; a login beyond that evicts the oldest
 * (counted). A session older than `maxSessionAgeMs` (24 h) is forgotten (counted), so a missed
 * logout cannot renew a lease forever. due() is O(open sessions + addresses).
 */
import type { LogRecord, LoginRecord, LogoutRecord } from "./record.ts";

export interface SessionTrackerOptions {
  /** The lease TTL (RELAYLEASE_LEASE_TTL), ms. */
  leaseTtlMs: number;
  /** Fraction of the TTL after which a lease is renewed; 2/3 by default. */
  renewAfter?: number;
  maxSessions?: number;
  maxSessionAgeMs?: number;
}

/** A lease to renew: the address, and the user and service of its latest login. */
export interface Renewal {
  ip: string;
  user?: string;
  service: string;
}

export interface SessionStats {
  logins: number;
  logouts: number;
  /** Logouts that closed nothing. */
  unmatchedLogouts: number;
  /** Sessions dropped to stay within maxSessions. */
  evicted: number;
  /** Sessions forgotten after maxSessionAgeMs without a logout. */
  expired: number;
  /** Logins already older than maxSessionAgeMs when seen. */
  stale: number;
  renewals: number;
}

interface Session {
  readonly key: string;
  readonly ip: string;
  readonly user: string | undefined;
  readonly service: string;
  readonly openedAt: number;
}

interface Address {
  grantedAt: number;
  user: string | undefined;
  service: string;
  /** Keys of its open sessions, oldest first. */
  readonly sessions: Set<string>;
}

export class SessionTracker {
  readonly stats: SessionStats = {
    logins: 0,
    logouts: 0,
    unmatchedLogouts: 0,
    evicted: 0,
    expired: 0,
    stale: 0,
    renewals: 0,
  };
  readonly #renewAfterMs: number;
  readonly #maxSessions: number;
  readonly #maxAgeMs: number;
  /** Insertion order is login order: the first is the one to evict. */
  readonly #sessions = new Map<string, Session>();
  readonly #addresses = new Map<string, Address>();
  readonly #byUser = new Map<string, Set<string>>();
  #next = 0;

  constructor(options: SessionTrackerOptions) {
    const { leaseTtlMs, renewAfter = 2 / 3 } = options;
    if (!(leaseTtlMs > 0)) throw new RangeError(`leaseTtlMs ${leaseTtlMs}`);
    if (!(renewAfter > 0 && renewAfter < 1)) throw new RangeError(`renewAfter ${renewAfter}`);
    this.#renewAfterMs = leaseTtlMs * renewAfter;
    this.#maxSessions = options.maxSessions ?? 100_000;
    this.#maxAgeMs = options.maxSessionAgeMs ?? 86_400_000;
    if (!(this.#maxSessions >= 1)) throw new RangeError(`maxSessions ${this.#maxSessions}`);
  }

  /** Open sessions. */
  get size(): number {
    return this.#sessions.size;
  }

  /** Addresses with at least one open session. */
  get addresses(): number {
    return this.#addresses.size;
  }

  record(record: LogRecord, now: number): void {
    if (record.kind === "login") this.#login(record, now);
    else this.#logout(record);
  }

  /** Addresses to renew now; each is taken as renewed at `now`. */
  due(now: number): Renewal[] {
    for (const s of this.#sessions.values()) {
      if (now - s.openedAt >= this.#maxAgeMs) {
        this.stats.expired++;
        this.#close(s);
      }
    }
    const due: Renewal[] = [];
    for (const [ip, a] of this.#addresses) {
      if (now - a.grantedAt < this.#renewAfterMs) continue;
      a.grantedAt = now;
      due.push(
        a.user === undefined
          ? { ip, service: a.service }
          : { ip, user: a.user, service: a.service },
      );
    }
    this.stats.renewals += due.length;
    return due;
  }

  #login(r: LoginRecord, now: number): void {
    const at = Math.min(r.at ?? now, now);
    if (now - at >= this.#maxAgeMs) {
      this.stats.stale++;
      return;
    }
    this.stats.logins++;
    const key = r.session === undefined ? `a:${this.#next++}` : `s:${r.session}`;
    const a = this.#addresses.get(r.ip);
    if (this.#sessions.has(key)) {
      if (a !== undefined) a.grantedAt = Math.max(a.grantedAt, at); // the same line read twice
      return;
    }
    if (this.#sessions.size >= this.#maxSessions) this.#evictOldest();
    const session: Session = { key, ip: r.ip, user: r.user, service: r.service, openedAt: at };
    this.#sessions.set(key, session);
    const address = this.#addresses.get(r.ip) ?? this.#newAddress(r.ip, at);
    address.grantedAt = Math.max(address.grantedAt, at);
    address.user = r.user;
    address.service = r.service;
    address.sessions.add(key);
    if (r.user !== undefined) {
      const keys = this.#byUser.get(r.user) ?? new Set<string>();
      keys.add(key);
      this.#byUser.set(r.user, keys);
    }
  }

  #newAddress(ip: string, at: number): Address {
    const a: Address = { grantedAt: at, user: undefined, service: "", sessions: new Set() };
    this.#addresses.set(ip, a);
    return a;
  }

  #evictOldest(): void {
    const oldest = this.#sessions.values().next();
    if (oldest.done === true) return;
    this.stats.evicted++;
    this.#close(oldest.value);
  }

  #logout(r: LogoutRecord): void {
    this.stats.logouts++;
    const s = this.#match(r);
    if (s === undefined) this.stats.unmatchedLogouts++;
    else this.#close(s);
  }

  #match(r: LogoutRecord): Session | undefined {
    if (r.session !== undefined) return this.#sessions.get(`s:${r.session}`);
    if (r.ip !== undefined) {
      const keys = this.#addresses.get(r.ip)?.sessions;
      return this.#first(keys, (s) => r.user === undefined || s.user === r.user);
    }
    if (r.user === undefined) return undefined;
    const keys = this.#byUser.get(r.user);
    return this.#first(keys, (s) => r.service === undefined || s.service === r.service);
  }

  #first(keys: Set<string> | undefined, ok: (s: Session) => boolean): Session | undefined {
    for (const key of keys ?? []) {
      const s = this.#sessions.get(key);
      if (s !== undefined && ok(s)) return s;
    }
    return undefined;
  }

  #close(s: Session): void {
    this.#sessions.delete(s.key);
    const a = this.#addresses.get(s.ip);
    a?.sessions.delete(s.key);
    if (a?.sessions.size === 0) this.#addresses.delete(s.ip);
    if (s.user !== undefined) {
      const keys = this.#byUser.get(s.user);
      keys?.delete(s.key);
      if (keys?.size === 0) this.#byUser.delete(s.user);
    }
  }
}
