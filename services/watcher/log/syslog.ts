/**
 * Syslog login source (RELAYLEASE_SYSLOG_LISTEN): receives syslog datagrams, RFC 3164 or RFC 5424
 * (syslog-codec.ts), from a POP/IMAP server logging to syslog or from a syslog daemon relaying
 * its mail facility (rsyslog `mail.* @127.0.0.1:5514`, syslog-ng `network(transport("udp"))`),
 * and hands each login or logout record (parse.ts) to `onRecord`. Datagrams carry no session,
 * so the layering is codec (pure) and server; `syslogRecord` is the pure step between them.
 *
 * Accepts: UDP on `host:port` (IPv4, or `[v6]:port`). Not yet: unix datagram sockets (a path):
 * Node's dgram has no AF_UNIX support, and the packages that add it are native addons; a path is
 * refused at start (parseSyslogListen). Not: TCP or TLS syslog (RFC 6587, RFC 5425).
 * Trust: UDP source addresses are trivially spoofed and anything that reaches the port can report
 * a login: listen on loopback (the default the lead should pick) or a pod-local address.
 * Limits: MAX_SYSLOG_BYTES per datagram (a larger one is a protocol error); the kernel drops
 * datagrams when the receive buffer (`receiveBufferBytes`, else the kernel default) is full:
 * syslog over UDP is lossy by design, so a busy server should prefer the file follower.
 * A bad datagram is counted and logged at most once per WARN_INTERVAL_MS; it never stops us.
 */
import dgram from "node:dgram";
import { isIPv6 } from "node:net";
import { formatListenAddress, parseListenAddress } from "../../../shared/listen-address.ts";
import type { Logger } from "../../../shared/log.ts";
import { ProtocolError } from "../../../shared/protocol-error.ts";
import { parseLogMessage, type LogRecord } from "./parse.ts";
import { decodeSyslog, type SyslogMessage } from "./syslog-codec.ts";

export const SYSLOG_LISTEN_FORM = "host:port or [ipv6]:port (UDP)";
const WARN_INTERVAL_MS = 10_000;

export interface SyslogServerOptions {
  /** `host:port` or `[ipv6]:port` (parseSyslogListen). */
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
  /** `host:port` actually bound (the real port when 0 was asked). */
  readonly address: string;
  readonly stats: Readonly<SyslogServerStats>;
  close(): Promise<void>;
}

/**
 * The setting's parser: a UDP listen address. @throws Error naming the accepted form, and for a
 * unix socket path, why it is not supported yet.
 */
export function parseSyslogListen(raw: string): { host: string; port: number } {
  const where = parseListenAddress(raw);
  if ("path" in where) {
    throw new Error(
      `unix datagram sockets are not supported yet (Node's dgram has no AF_UNIX); use ${SYSLOG_LISTEN_FORM}, e.g. 127.0.0.1:5514`,
    );
  }
  return where;
}

/** The record a syslog message carries, with the header's timestamp as `at`; or undefined. */
export function syslogRecord(message: SyslogMessage): LogRecord | undefined {
  if (message.appName === undefined) return undefined;
  const record = parseLogMessage(message.appName, message.message);
  if (record !== undefined && message.timestamp !== undefined) record.at = message.timestamp;
  return record;
}

export async function startSyslogServer(options: SyslogServerOptions): Promise<SyslogServer> {
  const { host, port } = parseSyslogListen(options.listen);
  const log = options.log.child({ module: "syslog" });
  const now = options.now ?? Date.now;
  const stats: SyslogServerStats = {
    datagrams: 0,
    records: 0,
    protocolErrors: 0,
    callbackErrors: 0,
  };
  const socket = dgram.createSocket({
    type: isIPv6(host) ? "udp6" : "udp4",
    ...(options.receiveBufferBytes === undefined
      ? {}
      : { recvBufferSize: options.receiveBufferBytes }),
  });
  let lastWarn = 0;
  let suppressed = 0;
  socket.on("message", (datagram, peer) => {
    stats.datagrams++;
    let record: LogRecord | undefined;
    try {
      record = syslogRecord(decodeSyslog(datagram, now()));
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err; // our own bug: fail loudly
      stats.protocolErrors++;
      const t = Date.now();
      if (t - lastWarn < WARN_INTERVAL_MS) {
        suppressed++;
        return;
      }
      log.warn({ err, peer: peer.address, suppressed }, "bad syslog datagram");
      lastWarn = t;
      suppressed = 0;
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
    stats,
    close: () =>
      new Promise<void>((resolve) => {
        socket.close(() => {
          resolve();
        });
      }),
  };
}
