// Node's floors for the front-door benchmarks: servers that answer with canned bytes and parse
// nothing, what any Node server costs before it does any work. Each is a program for
// `node --input-type=module -e PROGRAM PORT`; it prints "ready" once it listens on 127.0.0.1:PORT.
import type { ChildProcess } from "node:child_process";

/**
 * Resolves at the first line a server prints: the bare servers here and the C fixtures
 * (bench/reference-milter/) print one once they listen. Rejects if it exits first.
 */
export function printsALine(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    child.stdout?.once("data", () => {
      resolve();
    });
    child.once("exit", (code, signal) => {
      reject(new Error(`exited (${signal ?? String(code)}) at start`));
    });
  });
}

/**
 * A milter answering OPTNEG and CONNECT with canned frames, QUIT or the peer's end by closing:
 * Node's floor. Half-open, so that the peer's end closes the socket with no shutdown(2) first.
 */
export const BARE_MILTER = `
import net from "node:net";
const frame = (cmd, payload) => { const b = Buffer.alloc(5 + payload.length); b.writeUInt32BE(1 + payload.length, 0); b[4] = cmd.charCodeAt(0); payload.copy(b, 5); return b; };
const optneg = Buffer.alloc(12); optneg.writeUInt32BE(6, 0); optneg.writeUInt32BE(0, 4); optneg.writeUInt32BE(0x37e, 8);
const OPTNEG = frame("O", optneg), ACCEPT = frame("a", Buffer.alloc(0));
net.createServer({ allowHalfOpen: true }, (s) => {
  let buf = Buffer.alloc(0);
  s.on("error", () => {});
  s.on("end", () => s.destroy());
  s.on("data", (c) => {
    buf = buf.length ? Buffer.concat([buf, c]) : c;
    while (buf.length >= 5) {
      const len = buf.readUInt32BE(0); if (buf.length < 4 + len) break;
      const cmd = String.fromCharCode(buf[4]); buf = buf.subarray(4 + len);
      if (cmd === "O") s.write(OPTNEG); else if (cmd === "C") s.write(ACCEPT); else if (cmd === "Q") { s.destroy(); return; }
    }
  });
}).listen(Number(process.argv[1]), "127.0.0.1", () => console.log("ready"));
`;

/** A policy server answering every request (up to its blank line) with OK: Node's floor. */
export const BARE_POLICY = `
import net from "node:net";
const OK = Buffer.from("action=OK\\n\\n");
net.createServer((s) => {
  let text = "";
  s.on("error", () => {});
  s.on("data", (c) => {
    text += c.toString("latin1");
    for (let end = text.indexOf("\\n\\n"); end >= 0; end = text.indexOf("\\n\\n")) {
      text = text.slice(end + 2);
      s.write(OK);
    }
  });
}).listen(Number(process.argv[1]), "127.0.0.1", () => console.log("ready"));
`;
