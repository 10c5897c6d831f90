/**
 * Syslog login source (RELAYLEASE_SYSLOG_LISTEN): receives syslog datagrams, RFC 3164 or RFC 5424
 * (syslog-codec.ts), from a POP/IMAP server logging to syslog or from a syslog daemon relaying
 * its mail facility (rsyslog `mail.* @127.0.0.1:5514` or omuxsock, syslog-ng
 * `network(transport("udp"))` or `unix-dgram()`), and hands each login or logout record (parse.ts)
 * to `onRecord`. Datagrams carry no session, so the layering is codec (pure) and server;
 * `syslogRecord` is the pure step between them.
 *
 * Accepts: UDP on `host:port` (IPv4, or `[v6]:port`), or a unix datagram socket at a path (what
 * glibc's syslog() writes to as /dev/log; in a pod, a socket in an emptyDir the mail server's
 * container shares). Node's dgram has no AF_UNIX, so the path form loads the native module
 * node-unix-socket, and only then: without its prebuilt binary for this platform, a path is a
 * startup error. Not: TCP or TLS syslog (RFC 6587, RFC 5425).
 * Trust: anything that reaches the port or can write to the socket can report a login. UDP
 * source addresses are trivially spoofed: listen on loopback or a pod-local address. The socket
 * is world-writable like /dev/log (see bindUnix): its directory's permissions are the control.
 * Limits: MAX_SYSLOG_BYTES per datagram (a larger one is a protocol error). UDP is lossy by
 * design: the kernel drops datagrams when the receive buffer (`receiveBufferBytes`, else the
 * kernel default) is full, so a busy server should prefer the file follower. A unix datagram
 * socket does not drop: when its queue (net.unix.max_dgram_qlen) is full a sender waits, or gets
 * EAGAIN if non-blocking.
 * A bad datagram is counted and logged at most once per WARN_INTERVAL_MS; it never stops us.
 */
import dgram from "node:dgram";
import { chmod, lstat, unlink } from "node:fs/promises";
import net from "node:net";
import type { DgramSocket } from "node-unix-socket";
import { errorMessage } from "../../../shared/errors.ts";
import {
  formatListenAddress,
  parseListenAddress,
  removeStaleSocket,
  type ListenAddress,
} from "../../../shared/listen-address.ts";
import { rateLimitedWarn, type Logger } from "../../../shared/log.ts";
import { ProtocolError } from "../../../shared/protocol-error.ts";
import { parseLogMessage, type LogRecord } from "./parse.ts";
import { decodeSyslog, type SyslogMessage } from "./syslog-codec.ts";

/** The accepted form, for the settings schema. */
export const SYSLOG_LISTEN_FORM =
  "host:port or [ipv6]:port (UDP), or a unix datagram socket path (containing /)";
const SETTING = "RELAYLEASE_SYSLOG_LISTEN";
const WARN_INTERVAL_MS = 10_000;

export interface SyslogServerOptions {
  /** `host:port`, `[ipv6]:port` or a socket path (parseSyslogListen). */
  listen: string;
  onRecord: (record: LogRecord) => void;
  log: Logger;
  /** Places classic timestamps (no year) in a year; Date.now by default. */
  now?: () => number;
  receiveBufferBytes?: number;
}

/** Counters for the lead's metrics; plain numbers, read them whenever. */
export interface SyslogServerStats {
  datagrams: number;
  records: number;
  protocolErrors: number;
  /** onRecord threw. */
  callbackErrors: number;
}

export interface SyslogServer {
  /** `host:port` actually bound (the real port when 0 was asked), or the socket path. */
  readonly address: string;
  readonly stats: Readonly<SyslogServerStats>;
  /** Stops receiving; for a unix socket, also removes the socket file. */
  close(): Promise<void>;
}

/**
 * The setting's parser: a UDP listen address, or a path (anything containing "/") for a unix
 * datagram socket. @throws Error naming the accepted forms.
 */
export function parseSyslogListen(raw: string): ListenAddress {
  return parseListenAddress(raw);
}

/** The record a syslog message carries, with the header's timestamp as `at`; or undefined. */
export function syslogRecord(message: SyslogMessage): LogRecord | undefined {
  if (message.appName === undefined) return undefined;
  const record = parseLogMessage(message.appName, message.message);
  if (record !== undefined && message.timestamp !== undefined) record.at = message.timestamp;
  return record;
}

type OnDatagram = (datagram: Buffer, peer: string | undefined) => void;

/** A bound socket of either kind. */
interface Bound {
  address: string;
  close: () => Promise<void>;
}

export async function startSyslogServer(options: SyslogServerOptions): Promise<SyslogServer> {
  const where = parseSyslogListen(options.listen);
  const log = options.log.child({ module: "syslog" });
  const stats: SyslogServerStats = {
    datagrams: 0,
    records: 0,
    protocolErrors: 0,
    callbackErrors: 0,
  };
  const onDatagram = datagramHandler(options, log, stats);
  const bound =
    "path" in where
      ? await bindUnix(where.path, options, log, onDatagram)
      : await bindUdp(where, options, log, onDatagram);
  return { address: bound.address, stats, close: bound.close };
}

/** One datagram, whatever the socket: decode, count, warn (rate-limited), hand on the record. */
function datagramHandler(
  options: SyslogServerOptions,
  log: Logger,
  stats: SyslogServerStats,
): OnDatagram {
  const now = options.now ?? Date.now;
  const warn = rateLimitedWarn(log, WARN_INTERVAL_MS);
  return (datagram, peer) => {
    stats.datagrams++;
    let record: LogRecord | undefined;
    try {
      record = syslogRecord(decodeSyslog(datagram, now()));
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err; // our own bug: fail loudly
      stats.protocolErrors++;
      warn({ err, peer }, "bad syslog datagram");
      return;
    }
    if (record === undefined) return;
    stats.records++;
    try {
      options.onRecord(record);
    } catch (err) {
      stats.callbackErrors++;
      log.error({ err }, "syslog record consumer failed");
    }
  };
}

async function bindUdp(
  { host, port }: { host: string; port: number },
  options: SyslogServerOptions,
  log: Logger,
  onDatagram: OnDatagram,
): Promise<Bound> {
  const socket = dgram.createSocket({
    type: net.isIPv6(host) ? "udp6" : "udp4",
    ...(options.receiveBufferBytes === undefined
      ? {}
      : { recvBufferSize: options.receiveBufferBytes }),
  });
  socket.on("message", (datagram, peer) => {
    onDatagram(datagram, peer.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(port, host, () => {
      socket.off("error", reject);
      resolve();
    });
  });
  socket.on("error", (err) => {
    log.error({ err }, "syslog socket error");
  });
  return {
    address: formatListenAddress(socket.address()),
    close: () =>
      new Promise<void>((resolve) => {
        socket.close(() => {
          resolve();
        });
      }),
  };
}

/** @throws Error naming the setting and the path when the socket cannot be made there. */
async function bindUnix(
  path: string,
  options: SyslogServerOptions,
  log: Logger,
  onDatagram: OnDatagram,
): Promise<Bound> {
  const fail = (err: unknown) =>
    new Error(`${SETTING} ${path}: ${errorMessage(err)}`, { cause: err });
  const { DgramSocket } = await loadUnixDgram(path);
  await removeStaleSocket(path).catch((err: unknown) => {
    throw fail(err);
  });
  const socket = new DgramSocket();
  try {
    socket.bind(path);
  } catch (err) {
    socket.close();
    throw fail(err);
  }
  let ino: number | undefined;
  try {
    ino = (await lstat(path)).ino;
    // The mail server (Dovecot's log process, rsyslog) runs as another user, and sending to a
    // unix socket needs write permission on it: open it to all like /dev/log, and let the
    // directory (e.g. an emptyDir shared only with the mail server's container) limit who
    // reaches it.
    await chmod(path, 0o666);
    if (options.receiveBufferBytes !== undefined) {
      socket.setRecvBufferSize(options.receiveBufferBytes);
    }
  } catch (err) {
    socket.close();
    if (ino !== undefined) await removeOwnSocket(path, ino);
    throw fail(err);
  }
  // The module reads up to 65535 bytes a datagram: a longer one arrives cut, still over
  // MAX_SYSLOG_BYTES, so it is counted as a protocol error like any oversized one.
  socket.on("data", (datagram: Buffer, peer: string) => {
    onDatagram(datagram, peer === "" ? undefined : peer); // a syslog() sender is unnamed
  });
  // The module closes the socket before it emits an error: nothing more will arrive.
  socket.on("error", (err: unknown) => {
    log.error({ err, path }, "syslog socket failed; no longer receiving");
  });
  return {
    address: path,
    close: async () => {
      socket.close();
      await removeOwnSocket(path, ino);
    },
  };
}

/** Loaded only when a path is configured, so nothing else needs the native module. */
async function loadUnixDgram(path: string): Promise<{ DgramSocket: typeof DgramSocket }> {
  try {
    return await import("node-unix-socket");
  } catch (err) {
    throw new Error(
      `${SETTING} ${path}: a unix datagram socket needs the native module node-unix-socket, ` +
        `which did not load on ${process.platform}-${process.arch} (${errorMessage(err)}); ` +
        `use host:port (UDP) instead, e.g. 127.0.0.1:5514`,
      { cause: err },
    );
  }
}

/** Removes our socket file, unless another instance has bound a new one there since. */
async function removeOwnSocket(path: string, ino: number): Promise<void> {
  try {
    if ((await lstat(path)).ino === ino) await unlink(path);
  } catch (err) {
    if (errnoOf(err) !== "ENOENT") throw err;
  }
}

function errnoOf(err: unknown): string | undefined {
  return err instanceof Error ? (err as NodeJS.ErrnoException).code : undefined;
}
