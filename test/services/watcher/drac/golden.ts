// Golden bytes from shared/reference/drac-rpc.md 2.2-2.5, shared by the DRAC codec tests.

/** "00 0d bc 05 ..." to bytes; whitespace and newlines are ignored. */
export function hex(text: string): Buffer {
  return Buffer.from(text.replace(/\s+/g, ""), "hex");
}

const HEADER = (vers: number, proc = 1) => `
  00 00 00 01  00 00 00 00  00 00 00 02  00 0d bc 05
  00 00 00 0${vers}  00 00 00 0${proc}
  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00`;

/** drac-rpc.md 2.2: version 1, xid 1, 203.0.113.5 (44 bytes). */
export const CALL_V1 = hex(`${HEADER(1)} cb 00 71 05`);

/** drac-rpc.md 2.2: version 2, xid 1, 2001:db8::5 from an x86 client (104 bytes). */
export const CALL_V2 = hex(
  `${HEADER(2)} 00 00 00 20  00 00 00 01  00 00 00 0d  ff ff ff b8 ${"00 00 00 00 ".repeat(11)} 00 00 00 05`,
);

/** The same call as an unsigned-char platform sends it. */
export const CALL_V2_UNSIGNED = hex(
  `${HEADER(2)} 00 00 00 20  00 00 00 01  00 00 00 0d  00 00 00 b8 ${"00 00 00 00 ".repeat(11)} 00 00 00 05`,
);

/** drac-rpc.md 2.3, xid 1. */
export const REPLY = {
  addSuccess: hex(
    "00 00 00 01  00 00 00 01  00 00 00 00  00 00 00 00 00 00 00 00  00 00 00 00  00 00 00 00",
  ),
  addPerm: hex(
    "00 00 00 01  00 00 00 01  00 00 00 00  00 00 00 00 00 00 00 00  00 00 00 00  00 00 00 01",
  ),
  nullproc: hex("00 00 00 01  00 00 00 01  00 00 00 00  00 00 00 00 00 00 00 00  00 00 00 00"),
  progMismatch: hex(
    "00 00 00 01  00 00 00 01  00 00 00 00  00 00 00 00 00 00 00 00  00 00 00 02  00 00 00 01 00 00 00 02",
  ),
  procUnavail: hex("00 00 00 01  00 00 00 01  00 00 00 00  00 00 00 00 00 00 00 00  00 00 00 03"),
  garbageArgs: hex("00 00 00 01  00 00 00 01  00 00 00 00  00 00 00 00 00 00 00 00  00 00 00 04"),
  progUnavail: hex("00 00 00 01  00 00 00 01  00 00 00 00  00 00 00 00 00 00 00 00  00 00 00 01"),
  rpcMismatch: hex("00 00 00 01  00 00 00 01  00 00 00 01  00 00 00 00  00 00 00 02  00 00 00 02"),
  authRejected: hex("00 00 00 01  00 00 00 01  00 00 00 01  00 00 00 01  00 00 00 02"),
};

/** drac-rpc.md 2.5: PMAPPROC_GETPORT for 900101 v1 UDP (56 bytes), xid 1. */
export const GETPORT_CALL = hex(`
  00 00 00 01  00 00 00 00  00 00 00 02  00 01 86 a0  00 00 00 02  00 00 00 03
  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00
  00 0d bc 05  00 00 00 01  00 00 00 11  00 00 00 00`);
