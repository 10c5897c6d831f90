// Binding a server to a RELAYLEASE_*_LISTEN address (shared/listen-address.ts): host:port, or a
// unix socket path, from which a stale socket left by a crash is removed first.
import type { Server } from "node:net";
import { formatListenAddress, parseListenAddress, removeStaleSocket } from "./listen-address.ts";

export interface ListeningServer {
  /** host:port actually bound (the port resolved when 0 was asked for), or the socket path. */
  readonly address: string;
  close(): Promise<void>;
}

/** Binds `server`; resolves with the bound address once it listens. */
export async function bind(server: Server, address: string): Promise<string> {
  const where = parseListenAddress(address);
  // The MTA (Postfix's smtpd runs as postfix) is another user, and connecting to a unix socket
  // needs write permission on it: open it to all, as Postfix's own sockets are, and let the
  // directory (e.g. a volume shared only with the MTA's container) limit who reaches it.
  const options = "path" in where ? { ...where, readableAll: true, writableAll: true } : where;
  if ("path" in where) await removeStaleSocket(where.path);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return formatListenAddress(server.address());
}

/** Binds an HTTP server; close() also ends its idle keep-alive connections. */
export async function listen(
  server: Server & { closeAllConnections?: () => void },
  address: string,
): Promise<ListeningServer> {
  const bound = await bind(server, address);
  return {
    address: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
        server.closeAllConnections?.();
      }),
  };
}
