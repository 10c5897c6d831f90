/**
 * A throwaway Dovecot 2.3 on loopback for end-to-end tests (shared/reference/login-sources.md,
 * Appendix): one config file in a temp dir, its own base_dir (sockets, master.pid), state_dir,
 * users file, mail homes and log file, POP3 and IMAP on 127.0.0.1:<free ports>, and the system's
 * Dovecot service and /etc/dovecot left alone. Needs root (the master drops to dovecot, dovenull
 * and nobody, all created by the package) and Debian's dovecot-pop3d and dovecot-imapd
 * (scripts/install-dovecot.sh); `dovecotUnavailable()` says why a test must skip.
 *
 * The instance: plain text passwords over plain text connections (`ssl = no`,
 * `disable_plaintext_auth = no`), users from a passwd-file (mail as `nobody`, Maildir under
 * `<dir>/home/<user>`), `auth_verbose` on and `auth_failure_delay = 0` (a wrong password is
 * answered within Dovecot's 0.5 s failure timer instead of 2 s, and logged by the auth process
 * too). Everything, Info included, goes to `<dir>/dovecot.log` (log_path and info_log_path): the
 * file a log source follows, e.g.
 *   `Nov 28 21:55:57 pop3-login: Info: Login: user=<alice>, method=PLAIN, rip=127.0.0.2, ...`.
 * With `policy`, the auth process reports every authentication to that URL in report-only mode
 * (login-sources.md 2.1): `auth_policy_check_before_auth` and `..._after_auth` off,
 * `auth_policy_report_after_auth = yes`, the attributes below, and an optional
 * `auth_policy_server_api_header`.
 *
 * Use: `const dc = await startDovecot({ policy: { url } })`, connect from 127.0.0.2 and up (see
 * mail-login-client.ts: distinct loopback addresses are distinct clients), and always
 * `await dc.cleanup()` (or `await using`). The master runs in the foreground (`dovecot -F`) as our
 * child; a test process that exits without cleanup still sends it SIGTERM from an 'exit' hook,
 * and one that is killed, from a small shell watchdog that sees our end of its pipe close.
 * Every failure message carries the tail of the log file and of the master's stderr (where it
 * reports a bad config before its log is open).
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { constants as fsConstants, readFileSync } from "node:fs";
import { access, chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { Socket, connect } from "node:net";
import { tmpdir, userInfo } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { LOG_TAIL_LINES, logTail, logTailSync } from "./log-tail.ts";
import { freePort, startWatchdog } from "../../services/dev/nats-server.ts";

const DOVECOT = "/usr/sbin/dovecot";
const NEEDED = [DOVECOT, "/usr/lib/dovecot/pop3-login", "/usr/lib/dovecot/imap-login"];
const COMMAND_TIMEOUT_MS = 10_000;
const READY_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 10_000;
/** Bytes of the master's stderr kept for failure messages. */
const STDERR_TAIL_BYTES = 8192;
/** Starts that lose the race for a chosen port (freePort cannot reserve it) are retried. */
const START_ATTEMPTS = 3;

export const DOVECOT_HOST = "127.0.0.1";

/**
 * What the auth process sends (login-sources.md 2.1 and 2.3): the default template plus the local
 * address. Dovecot appends `success`, `policy_reject` (reports) and `tls` itself.
 */
export const POLICY_REQUEST_ATTRIBUTES =
  "login=%{requested_username} pwhash=%{hashed_password} remote=%{rip} local=%{lip} " +
  "device_id=%{client_id} protocol=%s session_id=%{session}";

export interface DovecotOptions {
  /** user -> plain text password; default `{ alice: "secret" }`. No ':' or line breaks. */
  users?: Readonly<Record<string, string>>;
  /** Report every authentication to an auth policy server. */
  policy?: {
    /** auth_policy_server_url, e.g. `http://127.0.0.1:8089/`. */
    url: string;
    /** auth_policy_server_api_header: `Name: value`, or a bare value sent as X-API-Key. */
    apiHeader?: string;
  };
  /** More top-level settings, e.g. `{ login_log_format_elements: "..." }`. */
  settings?: Readonly<Record<string, string>>;
}

export class DovecotError extends Error {
  override name = "DovecotError";
}

/** Why a throwaway Dovecot cannot run here, or undefined when it can. */
export async function dovecotUnavailable(): Promise<string | undefined> {
  if (process.platform !== "linux") return "the throwaway Dovecot kit runs on Linux only";
  if (userInfo().uid !== 0) return "a throwaway Dovecot must be started as root";
  for (const file of NEEDED) {
    try {
      await access(file, fsConstants.X_OK);
    } catch {
      return `Dovecot is not installed (no ${file}); run scripts/install-dovecot.sh`;
    }
  }
  return undefined;
}

/** The installed Dovecot's version, e.g. "2.3.19.1 (9b53102964)". */
export async function dovecotVersion(): Promise<string> {
  return (await run(DOVECOT, ["--version"])).trim();
}

/** Writes the instance's files in a fresh temp dir, starts it, and waits for both greetings. */
export async function startDovecot(options: DovecotOptions = {}): Promise<ThrowawayDovecot> {
  const dir = await mkdtemp(path.join(tmpdir(), "relaylease-dovecot-"));
  const dovecot = new ThrowawayDovecot(dir, options);
  try {
    await dovecot.start();
    return dovecot;
  } catch (err) {
    await dovecot.cleanup();
    throw err;
  }
}

const running = new Set<ThrowawayDovecot>();
process.once("exit", () => {
  for (const dc of running) dc.killNow();
});

export class ThrowawayDovecot {
  readonly dir: string;
  readonly host = DOVECOT_HOST;
  readonly #options: DovecotOptions;
  #pop3Port = 0;
  #imapPort = 0;
  #child: ChildProcess | undefined;
  #watchdog: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  #stderr = "";

  constructor(dir: string, options: DovecotOptions) {
    this.dir = dir;
    this.#options = options;
  }

  get pop3Port(): number {
    return this.#pop3Port;
  }
  get imapPort(): number {
    return this.#imapPort;
  }
  get configPath(): string {
    return path.join(this.dir, "dovecot.conf");
  }
  /** log_path and info_log_path: every line Dovecot logs. */
  get logPath(): string {
    return path.join(this.dir, "dovecot.log");
  }
  /** The config file as written. */
  config(): string {
    return readFileSync(this.configPath, "utf8");
  }

  /** Called by startDovecot(); retries with new ports if one was taken meanwhile. */
  async start(): Promise<void> {
    if (this.#child !== undefined) throw new DovecotError("this Dovecot is already running");
    await this.#prepare();
    for (let attempt = 1; ; attempt++) {
      this.#pop3Port = await freePort(DOVECOT_HOST);
      do this.#imapPort = await freePort(DOVECOT_HOST);
      while (this.#imapPort === this.#pop3Port);
      await writeFile(this.configPath, this.#configText(), { mode: 0o644 });
      const logged = (await this.logTail(Infinity)).split("\n").length;
      try {
        this.#spawn();
        await this.#waitReady();
        return;
      } catch (err) {
        await this.stop();
        const since = (await this.logTail(Infinity)).split("\n").slice(logged).join("\n");
        const lostRace = /Address already in use/.test(since + this.#stderr);
        if (!lostRace || attempt >= START_ATTEMPTS) throw err;
      }
    }
  }

  /** SIGTERM to the master, which stops its children; SIGKILL after STOP_TIMEOUT_MS. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (child === undefined) return;
    // Disarm the watchdog first, or it would take our closing its pipe as our death.
    this.#watchdog?.kill("SIGKILL");
    this.#watchdog = undefined;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
      await this.#exited;
      clearTimeout(timer);
    }
    this.#child = undefined;
    running.delete(this);
  }

  /** stop() and remove the temp dir. */
  async cleanup(): Promise<void> {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true, maxRetries: 3 });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.cleanup();
  }

  /** Last lines of the log file ("" before there is one). */
  logTail(lines = LOG_TAIL_LINES): Promise<string> {
    return logTail(this.logPath, lines);
  }

  /** Resolves once a line of the log file matches `pattern`. */
  async waitForLog(pattern: RegExp, timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = (await this.logTail(Infinity)).split("\n").find((l) => pattern.test(l));
      if (line !== undefined) return line;
      if (Date.now() > deadline) {
        throw this.#error(`no line matching ${String(pattern)} within ${timeoutMs} ms`);
      }
      await sleep(20);
    }
  }

  /** An error whose message carries the log and stderr tails. */
  error(message: string, cause?: unknown): DovecotError {
    return this.#error(message, cause);
  }

  /** For the process 'exit' hook only: synchronous, best effort. */
  killNow(): void {
    if (this.#child?.exitCode === null) this.#child.kill("SIGTERM");
  }

  async #prepare(): Promise<void> {
    // mkdtemp made it 0700: the login (dovenull), auth (dovecot) and mail (nobody) processes
    // must reach the sockets in run/ and the homes.
    await chmod(this.dir, 0o755);
    await mkdir(path.join(this.dir, "run"));
    await mkdir(path.join(this.dir, "state"));
    const home = path.join(this.dir, "home");
    await mkdir(home);
    await chmod(home, 0o777);
    const mail = await nobodyIds();
    const users = this.#options.users ?? { alice: "secret" };
    const lines = Object.entries(users).map(([user, password]) => {
      if (/[:\s]/.test(user) || user === "" || /[:\r\n]/.test(password)) {
        throw new DovecotError(`user ${JSON.stringify(user)}: no ':' or white space, please`);
      }
      // user:password:uid:gid:gecos:home:shell:extra_fields
      return `${user}:{PLAIN}${password}:${mail.uid}:${mail.gid}::${path.join(home, user)}::\n`;
    });
    // Read by the auth process (user dovecot) and its workers; the passwords are throwaway.
    await writeFile(path.join(this.dir, "users"), lines.join(""), { mode: 0o644 });
  }

  #configText(): string {
    const d = this.dir;
    const users = path.join(d, "users");
    const policy = this.#options.policy;
    const settings: [string, string][] = [
      ["base_dir", path.join(d, "run")],
      ["state_dir", path.join(d, "state")],
      ["protocols", "pop3 imap"],
      ["listen", DOVECOT_HOST],
      ["log_path", this.logPath],
      ["info_log_path", this.logPath],
      ["ssl", "no"],
      ["disable_plaintext_auth", "no"],
      ["auth_mechanisms", "plain login"],
      ["auth_verbose", "yes"],
      ["auth_failure_delay", "0"],
      ["mail_location", "maildir:~/Maildir"],
    ];
    if (policy !== undefined) {
      settings.push(
        ["auth_policy_server_url", policy.url],
        ["auth_policy_hash_nonce", randomBytes(16).toString("hex")],
        ["auth_policy_check_before_auth", "no"],
        ["auth_policy_check_after_auth", "no"],
        ["auth_policy_report_after_auth", "yes"],
        ["auth_policy_request_attributes", POLICY_REQUEST_ATTRIBUTES],
      );
      if (policy.apiHeader !== undefined) {
        settings.push(["auth_policy_server_api_header", policy.apiHeader]);
      }
    }
    settings.push(...Object.entries(this.#options.settings ?? {}));
    for (const [k, v] of settings) {
      if (/[\r\n]/.test(k + v)) throw new DovecotError(`setting ${k}: no line breaks, please`);
    }
    return `${settings.map(([k, v]) => `${k} = ${v}\n`).join("")}
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u ${users}
}
userdb {
  driver = passwd-file
  args = username_format=%u ${users}
}
service pop3-login {
  inet_listener pop3 {
    port = ${this.#pop3Port}
  }
  inet_listener pop3s {
    port = 0
  }
}
service imap-login {
  inet_listener imap {
    port = ${this.#imapPort}
  }
  inet_listener imaps {
    port = 0
  }
}
# The mail processes run as nobody and still report to stats.
service stats {
  unix_listener stats-reader {
    mode = 0666
  }
  unix_listener stats-writer {
    mode = 0666
  }
}
`;
  }

  #spawn(): void {
    this.#stderr = "";
    const child = spawn(DOVECOT, ["-c", this.configPath, "-F"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    for (const stream of [child.stdout, child.stderr]) {
      stream.setEncoding("utf8").on("data", (s: string) => {
        this.#stderr = (this.#stderr + s).slice(-STDERR_TAIL_BYTES);
      });
    }
    this.#exited = new Promise((resolve) => {
      child.once("exit", () => {
        resolve();
      });
      // A spawn error (no binary) comes instead of 'exit'.
      child.once("error", (err) => {
        this.#stderr += `\nspawn ${DOVECOT}: ${err.message}`;
        resolve();
      });
    });
    // The tests' own event loop must not wait on the child or its pipes.
    child.unref();
    for (const s of [child.stdout, child.stderr]) if (s instanceof Socket) s.unref();
    this.#child = child;
    this.#watchdog = startWatchdog(child, "relaylease-dovecot-watchdog");
    running.add(this);
  }

  /** Both listeners greet, raced against the master's exit, within READY_TIMEOUT_MS. */
  async #waitReady(): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    const exited = this.#exited.then(() => "exited" as const);
    for (const [port, greeting] of [
      [this.#pop3Port, /^\+OK /],
      [this.#imapPort, /^\* OK /],
    ] as const) {
      for (;;) {
        const line = await Promise.race([greetingOf(this.host, port), exited]);
        if (line === "exited") {
          const code = this.#child?.exitCode ?? this.#child?.signalCode;
          throw this.#error(`dovecot exited (${String(code)}) before listening on port ${port}`);
        }
        if (line !== undefined && greeting.test(line)) break;
        if (line !== undefined) throw this.#error(`port ${port} greeted with ${line}`);
        if (Date.now() > deadline) {
          throw this.#error(`no greeting on port ${port} within ${READY_TIMEOUT_MS} ms`);
        }
        await sleep(25);
      }
    }
  }

  #error(message: string, cause?: unknown): DovecotError {
    // Synchronous tail: error paths must not need another await to be useful.
    const stderr = this.#stderr.trim();
    return new DovecotError(
      `${message}\n--- ${this.logPath} (tail) ---\n${logTailSync(this.logPath, "(no log file)")}` +
        (stderr === "" ? "" : `\n--- dovecot stderr ---\n${stderr}`),
      { cause },
    );
  }
}

/** The first line a server sends, or undefined if it could not be had (refused, closed, slow). */
function greetingOf(host: string, port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    let data = "";
    const done = (line: string | undefined): void => {
      socket.destroy();
      resolve(line);
    };
    socket.setTimeout(2000, () => {
      done(undefined);
    });
    socket.setEncoding("utf8");
    socket.on("data", (s: string) => {
      data += s;
      const eol = data.indexOf("\r\n");
      if (eol >= 0) done(data.slice(0, eol));
      else if (data.length > 1024) done(data.slice(0, 1024));
    });
    socket.on("error", () => {
      done(undefined);
    });
    socket.on("close", () => {
      done(undefined);
    });
  });
}

/** Mail is stored as nobody:nogroup, as in the reference's throwaway setup. */
async function nobodyIds(): Promise<{ uid: number; gid: number }> {
  const id = (flag: string) => run("id", [flag, "nobody"]).then((s) => Number(s.trim()));
  return { uid: await id("-u"), gid: await id("-g") };
}

function run(file: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: COMMAND_TIMEOUT_MS }, (err, stdout, stderr) => {
      if (err === null) resolve(stdout);
      else reject(new Error(`${err.message.trim()}${stderr === "" ? "" : `\n${stderr.trim()}`}`));
    });
  });
}
