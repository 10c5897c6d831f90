import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  DEFAULT_MAX_FRAME_LENGTH,
  decodeCommands,
  decodeReplies,
  encodeCommand,
  encodeFrame,
  encodeReply,
  formatReplyCode,
  macroValue,
  readFrame,
  readMacroPacket,
} from "../../../../services/milter/milter-protocol/codec.ts";
import type {
  MilterCommand,
  MilterReply,
} from "../../../../services/milter/milter-protocol/codec.ts";
import { ProtocolError } from "../../../../shared/protocol-error.ts";

/** Bytes from a mix of hex byte lists ("00 0d 4f") and quoted strings, as in the reference. */
function bytes(...parts: (string | number[])[]): Buffer {
  return Buffer.concat(
    parts.map((p) =>
      Array.isArray(p)
        ? Buffer.from(p)
        : Buffer.from(
            p
              .trim()
              .split(/\s+/)
              .map((h) => parseInt(h, 16)),
          ),
    ),
  );
}
const str = (s: string) => [...Buffer.from(s, "latin1")];
/** A frame around a payload: the length is computed, so only payload bytes are spelled out. */
function frame(cmd: string, ...payload: (string | number[])[]): Buffer {
  const data = bytes(...payload);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(data.length + 1);
  head[4] = cmd.charCodeAt(0);
  return Buffer.concat([head, data]);
}

interface Valid {
  name: string;
  wire: Buffer;
  command: MilterCommand;
  /** Decodes, but encodeCommand writes it another (the usual) way. */
  lenient?: boolean;
}

// Golden bytes: shared/reference/mta-protocols.md 1.11 (captured from Postfix 3.7.11, Sendmail).
const valid: Valid[] = [
  {
    name: "Postfix OPTNEG (golden)",
    wire: bytes("00 00 00 0d 4f 00 00 00 06 00 00 01 ff 00 1f ff ff"),
    command: { type: "optneg", version: 6, actions: 0x1ff, protocol: 0x1fffff },
  },
  {
    name: "Postfix CONNECT family 4 (golden)",
    wire: bytes("00 00 00 18 43", str("localhost"), "00 34 df f4", str("127.0.0.1"), "00"),
    command: {
      type: "connect",
      hostname: "localhost",
      family: "4",
      port: 57332,
      address: "127.0.0.1",
    },
  },
  {
    name: "Sendmail -bs CONNECT family U (golden)",
    wire: bytes("00 00 00 0c 43", str("localhost"), "00 55"),
    command: { type: "connect", hostname: "localhost", family: "U" },
  },
  {
    name: "Postfix D R with {rcpt_mailer} (golden prefix)",
    wire: frame("D", "52", str("{rcpt_mailer}"), "00", str("smtp"), "00"),
    command: { type: "macro", stage: "R", macros: [["{rcpt_mailer}", "smtp"]] },
  },
  {
    name: "Postfix D R of a rejected recipient (RCPT_REJ, golden)",
    wire: frame(
      "D",
      "52",
      str("{rcpt_mailer}\0error\0{rcpt_host}\x005.7.1\0{rcpt_addr}\0Relay access denied\0"),
    ),
    command: {
      type: "macro",
      stage: "R",
      macros: [
        ["{rcpt_mailer}", "error"],
        ["{rcpt_host}", "5.7.1"],
        ["{rcpt_addr}", "Relay access denied"],
      ],
    },
  },
  {
    name: "Postfix CONNECT family 6",
    wire: frame("C", str("[2001:db8::1]\x006"), "00 19", str("2001:db8::1\0")),
    command: {
      type: "connect",
      hostname: "[2001:db8::1]",
      family: "6",
      port: 25,
      address: "2001:db8::1",
    },
  },
  {
    name: "Sendmail CONNECT family 6 (IPV6_FULL)",
    wire: frame("C", str("mx\x006"), "d0 e2", str("IPv6:2001:db8:0:0:0:0:0:1\0")),
    command: {
      type: "connect",
      hostname: "mx",
      family: "6",
      port: 53474,
      address: "IPv6:2001:db8:0:0:0:0:0:1",
    },
  },
  {
    name: "CONNECT family L",
    wire: frame("C", str("localhost\0L"), "00 00", str("/run/smtpd.sock\0")),
    command: {
      type: "connect",
      hostname: "localhost",
      family: "L",
      port: 0,
      address: "/run/smtpd.sock",
    },
  },
  {
    name: "empty macro packet (2 bytes, both MTAs)",
    wire: bytes("00 00 00 02 44 48"),
    command: { type: "macro", stage: "H", macros: [] },
  },
  {
    name: "Postfix D C defaults",
    wire: frame("D", str("Cj\0mx.test.invalid\0{daemon_name}\0mx\0v\0Postfix 3.7.11\0")),
    command: {
      type: "macro",
      stage: "C",
      macros: [
        ["j", "mx.test.invalid"],
        ["{daemon_name}", "mx"],
        ["v", "Postfix 3.7.11"],
      ],
    },
  },
  {
    name: "macro with an odd item count (Sendmail; go-milter PR #14)",
    wire: frame("D", str("M{auth_authen}\0")),
    command: { type: "macro", stage: "M", macros: [["{auth_authen}", ""]] },
    lenient: true,
  },
  {
    name: "macro for an unknown stage",
    wire: frame("D", str("Zx\0y\0")),
    command: { type: "macro", stage: "Z", macros: [["x", "y"]] },
  },
  {
    name: "HELO",
    wire: frame("H", str("client.example\0")),
    command: { type: "helo", helo: "client.example" },
  },
  {
    name: "MAIL with ESMTP arguments",
    wire: frame("M", str("<a@example.org>\0SIZE=100\0BODY=8BITMIME\0")),
    command: { type: "mail", args: ["<a@example.org>", "SIZE=100", "BODY=8BITMIME"] },
  },
  {
    name: "MAIL null sender",
    wire: frame("M", str("<>\0")),
    command: { type: "mail", args: ["<>"] },
  },
  {
    name: "RCPT",
    wire: frame("R", str("<b@remote.example>\0")),
    command: { type: "rcpt", args: ["<b@remote.example>"] },
  },
  {
    name: "RCPT with a UTF-8 address (SMTPUTF8)",
    wire: frame("R", [...Buffer.from("<jörg@exämple.org>\0", "utf8")]),
    command: { type: "rcpt", args: ["<jörg@exämple.org>"] },
  },
  { name: "DATA", wire: frame("T"), command: { type: "data" } },
  {
    name: "HEADER",
    wire: frame("L", str("Subject\0 hello\0")),
    command: { type: "header", name: "Subject", value: " hello" },
  },
  { name: "EOH", wire: frame("N"), command: { type: "eoh" } },
  {
    name: "BODY with NUL and CR LF",
    wire: frame("B", "68 69 00 0d 0a"),
    command: { type: "body", chunk: bytes("68 69 00 0d 0a") },
  },
  { name: "BODYEOB empty", wire: frame("E"), command: { type: "eob", chunk: Buffer.alloc(0) } },
  {
    name: "BODYEOB with a final chunk",
    wire: frame("E", str("end")),
    command: { type: "eob", chunk: Buffer.from("end") },
  },
  { name: "ABORT", wire: frame("A"), command: { type: "abort" } },
  { name: "QUIT", wire: frame("Q"), command: { type: "quit" } },
  { name: "QUIT_NC", wire: frame("K"), command: { type: "quit-nc" } },
  {
    name: "UNKNOWN",
    wire: frame("U", str("XYZZY now\0")),
    command: { type: "unknown", line: "XYZZY now" },
  },
  {
    name: "OPTNEG with extra bytes (libmilter reads 12)",
    wire: frame("O", "00 00 00 02 00 00 00 3f 00 00 00 7f ff ff"),
    command: { type: "optneg", version: 2, actions: 0x3f, protocol: 0x7f },
    lenient: true,
  },
  {
    name: "BODY at the frame limit (65535 data bytes)",
    wire: Buffer.concat([bytes("00 01 00 00 42"), Buffer.alloc(65535, 0x61)]),
    command: { type: "body", chunk: Buffer.alloc(65535, 0x61) },
  },
];

interface Invalid {
  name: string;
  wire: Buffer;
  error: RegExp;
  /** The length alone condemns it: the error comes from the 4 length bytes, before any data. */
  byLength?: boolean;
}

const invalid: Invalid[] = [
  { name: "length 0", wire: bytes("00 00 00 00"), error: /length 0/, byLength: true },
  {
    name: "HTTP probe",
    wire: Buffer.from("GET / HTTP/1.0\r\n\r\n"),
    error: /1195725856 over/,
    byLength: true,
  },
  {
    name: "TLS ClientHello",
    wire: bytes("16 03 01 00 a5 01 00 00 a1"),
    error: /over the limit/,
    byLength: true,
  },
  { name: "RDP / TPKT", wire: bytes("03 00 00 2f 2a e0"), error: /over the limit/, byLength: true },
  {
    name: "RESP (nagios check_tcp)",
    wire: Buffer.from("*1\r\n$4\r\nPING\r\n"),
    error: /707857674 over/,
    byLength: true,
  },
  { name: "ff 00 64 00", wire: bytes("ff 00 64 00"), error: /over the limit/, byLength: true },
  { name: "length 0xffffffff", wire: bytes("ff ff ff ff 42"), error: /4294967295/, byLength: true },
  {
    name: "one byte over the limit",
    wire: bytes("00 01 00 01 42"),
    error: /65537 over/,
    byLength: true,
  },
  { name: "unknown command 'Z'", wire: frame("Z"), error: /unknown milter command 'Z'/ },
  {
    name: "libmilter-internal code 0x01",
    wire: bytes("00 00 00 01 01"),
    error: /unknown milter command 0x01/,
  },
  {
    name: "OPTNEG of 11 bytes",
    wire: frame("O", "00 00 00 06 00 00 01 ff 00 1f ff"),
    error: /11 bytes, expected 12/,
  },
  { name: "MACRO without stage", wire: frame("D"), error: /no stage/ },
  { name: "MACRO without final NUL", wire: frame("D", str("Rj\0x")), error: /NUL/ },
  {
    name: "CONNECT without NUL",
    wire: frame("C", str("localhost")),
    error: /hostname without NUL/,
  },
  { name: "CONNECT without family", wire: frame("C", str("localhost\0")), error: /no family/ },
  {
    name: "CONNECT unknown family",
    wire: frame("C", str("h\0X"), "00 19", str("1.2.3.4\0")),
    error: /unknown family 'X'/,
  },
  {
    name: "CONNECT truncated port",
    wire: frame("C", str("h\x004"), "00"),
    error: /truncated port/,
  },
  {
    name: "CONNECT family 4 without port or address",
    wire: frame("C", str("h\x004")),
    error: /truncated port/,
  },
  {
    name: "CONNECT address without NUL",
    wire: frame("C", str("h\x004"), "00 19", str("1.2.3.4")),
    error: /NUL/,
  },
  {
    name: "CONNECT bytes after the address",
    wire: frame("C", str("h\x004"), "00 19", str("1.2.3.4\0x\0")),
    error: /2 strings, expected 1/,
  },
  {
    name: "CONNECT family U with a port",
    wire: frame("C", str("h\0U"), "00 19"),
    error: /2 unexpected data bytes/,
  },
  { name: "HELO without NUL", wire: frame("H", str("client")), error: /NUL/ },
  { name: "HELO with two strings", wire: frame("H", str("a\0b\0")), error: /2 strings/ },
  { name: "MAIL without address", wire: frame("M"), error: /no address/ },
  { name: "RCPT without NUL", wire: frame("R", str("<b@x>")), error: /NUL/ },
  {
    name: "HEADER with one string",
    wire: frame("L", str("Subject\0")),
    error: /1 strings, expected 2/,
  },
  { name: "UNKNOWN without NUL", wire: frame("U", str("HELP")), error: /NUL/ },
  { name: "ABORT with data", wire: frame("A", "00"), error: /1 unexpected data bytes/ },
  { name: "QUIT with data", wire: frame("Q", str("bye")), error: /unexpected data/ },
];

/** Decodes `wire` fed in the given pieces, as a session would; returns commands and leftovers. */
function decodeInPieces(wire: Buffer, cuts: number[]): { commands: MilterCommand[]; rest: number } {
  const commands: MilterCommand[] = [];
  let rest = Buffer.alloc(0);
  let at = 0;
  for (const cut of [...cuts, wire.length]) {
    rest = Buffer.concat([rest, wire.subarray(at, cut)]);
    at = cut;
    const out = decodeCommands(rest);
    commands.push(...out.commands);
    rest = rest.subarray(out.consumed);
  }
  return { commands, rest: rest.length };
}

const everyByte = (n: number) => Array.from({ length: n - 1 }, (_, i) => i + 1);

describe("milter codec: valid commands", () => {
  for (const c of valid) {
    it(`${c.name}: whole`, () => {
      assert.deepEqual(decodeCommands(c.wire), { commands: [c.command], consumed: c.wire.length });
    });
    if (c.lenient !== true) {
      it(`${c.name}: encodes to the same bytes`, () => {
        assert.deepEqual(encodeCommand(c.command), c.wire);
      });
    }
    if (c.wire.length < 1000) {
      it(`${c.name}: byte by byte`, () => {
        assert.deepEqual(decodeInPieces(c.wire, everyByte(c.wire.length)), {
          commands: [c.command],
          rest: 0,
        });
      });
    }
    it(`${c.name}: random splits`, () => {
      fc.assert(
        fc.property(
          fc.uniqueArray(fc.integer({ min: 1, max: c.wire.length - 1 }), { maxLength: 8 }),
          (cuts) => {
            const out = decodeInPieces(
              c.wire,
              cuts.sort((a, b) => a - b),
            );
            assert.deepEqual(out, { commands: [c.command], rest: 0 });
          },
        ),
        { numRuns: 50 },
      );
    });
  }

  it("all of them back to back, in one buffer", () => {
    const wire = Buffer.concat(valid.map((c) => c.wire));
    assert.deepEqual(
      decodeCommands(wire).commands,
      valid.map((c) => c.command),
    );
  });

  it("an incomplete frame is no command and no error", () => {
    for (const c of valid) {
      for (const n of [0, 3, 4, 5, c.wire.length - 1]) {
        if (n < 0 || n >= c.wire.length) continue;
        assert.deepEqual(decodeCommands(c.wire.subarray(0, n)), { commands: [], consumed: 0 });
      }
    }
  });

  it("a smaller limit refuses what the default allows", () => {
    const body = valid.find((c) => c.name.startsWith("BODY at the frame limit"));
    assert.ok(body);
    assert.equal(DEFAULT_MAX_FRAME_LENGTH, 65536);
    assert.throws(() => decodeCommands(body.wire, 1024), /65536 over the limit of 1024/);
    assert.equal(readFrame(body.wire, 0, 65536)?.end, body.wire.length);
  });
});

describe("milter codec: invalid commands", () => {
  for (const c of invalid) {
    it(c.name, () => {
      assert.throws(
        () => decodeCommands(c.wire),
        (err: unknown) => {
          assert.ok(err instanceof ProtocolError, `not a ProtocolError: ${String(err)}`);
          assert.match(err.message, c.error);
          return true;
        },
      );
    });
    if (c.byLength === true) {
      it(`${c.name}: refused from the length bytes alone`, () => {
        assert.throws(() => decodeCommands(c.wire.subarray(0, 4)), ProtocolError);
      });
    }
  }

  it("a bad frame after good ones still throws", () => {
    const wire = Buffer.concat([valid[0]?.wire ?? Buffer.alloc(0), bytes("00 00 00 00")]);
    assert.throws(() => decodeCommands(wire), ProtocolError);
  });
});

describe("milter codec: macro packets read without splitting", () => {
  const valueText = fc.string({ unit: "binary", maxLength: 20 }).filter((x) => !x.includes("\0"));
  const pairs = (...strings: string[]) => Buffer.from(strings.map((x) => `${x}\0`).join(""));
  const cases: { name: string; pairs: Buffer; macro: string; want: string | undefined }[] = [
    {
      name: "a braced name",
      pairs: pairs("{rcpt_mailer}", "smtp"),
      macro: "rcpt_mailer",
      want: "smtp",
    },
    { name: "a one-letter name", pairs: pairs("j", "mx", "_", "c"), macro: "_", want: "c" },
    { name: "absent", pairs: pairs("j", "mx"), macro: "rcpt_mailer", want: undefined },
    { name: "no pairs", pairs: Buffer.alloc(0), macro: "j", want: undefined },
    { name: "named twice: the last", pairs: pairs("{a}", "1", "a", "2"), macro: "a", want: "2" },
    {
      name: "a name without its value",
      pairs: pairs("j", "mx", "{auth_authen}"),
      macro: "auth_authen",
      want: "",
    },
    {
      name: "an empty value",
      pairs: pairs("{auth_authen}", "", "j", "x"),
      macro: "auth_authen",
      want: "",
    },
    {
      name: "a value is not a name",
      pairs: pairs("j", "{a}", "k", "v"),
      macro: "a",
      want: undefined,
    },
    {
      name: "braces only around the whole name",
      pairs: pairs("{ab", "1"),
      macro: "ab",
      want: undefined,
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.equal(macroValue(c.pairs, c.macro), c.want);
    });
  }

  it("refuses what decodeCommand refuses: no stage byte, no NUL at the end", () => {
    assert.throws(() => readMacroPacket(Buffer.alloc(0)), /no stage byte/);
    assert.throws(() => readMacroPacket(Buffer.from("Cj\0mx")), /missing NUL/);
    assert.deepEqual(readMacroPacket(Buffer.from("C")), { stage: "C", pairs: Buffer.alloc(0) });
  });

  it("finds what decodeCommand decodes, for any packet", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom("a", "{a}", "b", "{b}", ""), valueText), {
          maxLength: 6,
        }),
        fc.boolean(),
        (list, odd) => {
          const strings = list.flat();
          if (odd && strings.length > 0) strings.pop(); // the last name without its value
          const data = Buffer.concat([Buffer.from("M"), pairs(...strings)]);
          const [decoded] = decodeCommands(encodeFrame(0x44, data)).commands;
          if (decoded?.type !== "macro") throw new Error(`decoded ${JSON.stringify(decoded)}`);
          const { pairs: raw } = readMacroPacket(data);
          for (const name of ["a", "b", ""]) {
            const last = decoded.macros.filter(([n]) => n === name || n === `{${name}}`).at(-1);
            assert.equal(macroValue(raw, name), last?.[1]);
          }
        },
      ),
    );
  });
});

describe("milter codec: replies", () => {
  const replies: { name: string; wire: Buffer; reply: MilterReply }[] = [
    {
      name: "OPTNEG reply with an ENVRCPT macro list (golden)",
      wire: bytes(
        "00 00 00 2d 4f 00 00 00 06 00 00 01 00 00 00 13 76 00 00 00 03",
        str("{rcpt_mailer} {client_addr}\0"),
      ),
      reply: {
        type: "optneg",
        version: 6,
        actions: 0x100,
        protocol: 0x1376,
        symlists: [{ stage: 3, macros: "{rcpt_mailer} {client_addr}" }],
      },
    },
    {
      name: "REPLYCODE (golden)",
      wire: bytes("00 00 00 1b 79", str("550 5.7.1 Relaying denied\0")),
      reply: { type: "replycode", text: "550 5.7.1 Relaying denied" },
    },
    {
      name: "OPTNEG reply v2, no lists",
      wire: frame("O", "00 00 00 02 00 00 00 00 00 00 00 76"),
      reply: { type: "optneg", version: 2, actions: 0, protocol: 0x76, symlists: [] },
    },
    { name: "CONTINUE", wire: bytes("00 00 00 01 63"), reply: { type: "continue" } },
    { name: "ACCEPT", wire: bytes("00 00 00 01 61"), reply: { type: "accept" } },
    { name: "REJECT", wire: bytes("00 00 00 01 72"), reply: { type: "reject" } },
    { name: "TEMPFAIL", wire: bytes("00 00 00 01 74"), reply: { type: "tempfail" } },
    { name: "PROGRESS", wire: bytes("00 00 00 01 70"), reply: { type: "progress" } },
  ];
  for (const c of replies) {
    it(`${c.name}: decodes and encodes`, () => {
      assert.deepEqual(decodeReplies(c.wire), { replies: [c.reply], consumed: c.wire.length });
      assert.deepEqual(encodeReply(c.reply), c.wire);
    });
  }

  const bad: [string, Buffer, RegExp][] = [
    ["CONTINUE with data (Postfix comm error)", frame("c", "00"), /unexpected data/],
    ["REPLYCODE without NUL", frame("y", str("550 5.7.1 x")), /NUL/],
    ["REPLYCODE with two NULs", frame("y", str("550 5.7.1 x\0\0")), /2 strings/],
    ["REPLYCODE 250", frame("y", str("250 2.0.0 ok\0")), /reply code/],
    ["REPLYCODE class mismatch", frame("y", str("550 4.7.1 x\0")), /class/],
    ["REPLYCODE without space", frame("y", str("550\0")), /after the code/],
    ["REPLYCODE with a lone %", frame("y", str("550 5.7.1 100% no\0")), /lone %/],
    ["modification reply", frame("h", str("X\0y\0")), /unexpected milter reply 'h'/],
    [
      "OPTNEG reply truncated list",
      frame("O", "00 00 00 06 00 00 00 00 00 00 00 00 00 00 03"),
      /truncated/,
    ],
    [
      "OPTNEG reply list without NUL",
      frame("O", "00 00 00 06 00 00 00 00 00 00 00 00 00 00 00 03", str("{x}")),
      /without NUL/,
    ],
  ];
  for (const [name, wire, error] of bad) {
    it(`refuses ${name}`, () => {
      assert.throws(
        () => decodeReplies(wire),
        (err: unknown) => err instanceof ProtocolError && error.test(err.message),
      );
    });
  }

  it("formatReplyCode doubles % and builds multi-line replies", () => {
    assert.equal(formatReplyCode(550, "5.7.1", "100% no"), "550 5.7.1 100%% no");
    assert.equal(
      formatReplyCode(451, "4.7.1", ["first", "second"]),
      "451-4.7.1 first\r\n451 4.7.1 second",
    );
    const multi = encodeReply({
      type: "replycode",
      text: formatReplyCode(550, "5.7.1", ["a", "b"]),
    });
    assert.equal(decodeReplies(multi).replies.length, 1);
  });

  it("formatReplyCode refuses what an MTA would", () => {
    assert.throws(() => formatReplyCode(250, "2.0.0", "ok"), /reply code/);
    assert.throws(() => formatReplyCode(550, "4.7.1", "x"), /does not fit/);
    assert.throws(() => formatReplyCode(550, "5.7.1", "a\r\nb"), /CR, LF or NUL/);
    assert.throws(() => formatReplyCode(550, "5.7.1", "x".repeat(980)), /over 980/);
    assert.throws(() => formatReplyCode(550, "5.7.1", Array(33).fill("x")), /more than 32/);
  });
});

// ---- properties --------------------------------------------------------------------------------

/** fc.record without the null prototype, so deepEqual compares like with like. */
function rec<R>(model: { [K in keyof R]: fc.Arbitrary<R[K]> }): fc.Arbitrary<R> {
  return fc.record(model, { noNullPrototype: true });
}

const text = fc.string({ unit: "binary", maxLength: 40 }).filter((s) => !s.includes("\0"));
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const byteChar = fc.integer({ min: 0, max: 255 }).map((b) => String.fromCharCode(b));

const commandArb: fc.Arbitrary<MilterCommand> = fc.oneof(
  rec({ type: fc.constant("optneg" as const), version: u32, actions: u32, protocol: u32 }),
  rec({
    type: fc.constant("macro" as const),
    stage: byteChar,
    macros: fc.array(fc.tuple(text, text), { maxLength: 5 }),
  }),
  rec({
    type: fc.constant("connect" as const),
    hostname: text,
    family: fc.constant("U" as const),
  }),
  rec({
    type: fc.constant("connect" as const),
    hostname: text,
    family: fc.constantFrom("4" as const, "6" as const, "L" as const),
    port: fc.integer({ min: 0, max: 65535 }),
    address: text,
  }),
  rec({ type: fc.constant("helo" as const), helo: text }),
  rec({
    type: fc.constantFrom("mail" as const, "rcpt" as const),
    args: fc.array(text, { minLength: 1, maxLength: 4 }),
  }),
  rec({ type: fc.constant("header" as const), name: text, value: text }),
  rec({
    type: fc.constantFrom("body" as const, "eob" as const),
    chunk: fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
  }),
  rec({ type: fc.constant("unknown" as const), line: text }),
  rec({
    type: fc.constantFrom(
      "data" as const,
      "eoh" as const,
      "abort" as const,
      "quit" as const,
      "quit-nc" as const,
    ),
  }),
);

const lineText = fc
  .string({ unit: "binary-ascii", maxLength: 60 })
  .filter((s) => !/[\r\n\0]/.test(s));
const replyArb: fc.Arbitrary<MilterReply> = fc.oneof(
  rec({
    type: fc.constantFrom(
      "continue" as const,
      "accept" as const,
      "reject" as const,
      "tempfail" as const,
      "discard" as const,
      "skip" as const,
      "progress" as const,
    ),
  }),
  fc
    .tuple(
      fc.constantFrom(4, 5),
      fc.integer({ min: 0, max: 99 }),
      fc.array(lineText, { minLength: 1, maxLength: 3 }),
    )
    .map(([cls, n, lines]) => ({
      type: "replycode" as const,
      text: formatReplyCode(cls * 100 + n, `${cls}.7.1`, lines),
    })),
  rec({
    type: fc.constant("optneg" as const),
    version: u32,
    actions: u32,
    protocol: u32,
    symlists: fc.array(rec({ stage: u32, macros: text }), { maxLength: 4 }),
  }),
);

/** Only ProtocolError may escape a decoder, whatever the bytes. */
function onlyProtocolErrors(decode: () => unknown): void {
  try {
    decode();
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
  }
}

/** Arbitrary payloads behind a valid header, so the payload parsers see the junk too. */
const framedJunk = fc
  .tuple(fc.constantFrom(..."OD CHMRTLNBEUAQKZ\x01".split("")), fc.uint8Array({ maxLength: 48 }))
  .map(([cmd, data]) => frame(cmd, [...data]));
const framedReplyJunk = fc
  .tuple(fc.constantFrom(..."Oyacrtdsph".split("")), fc.uint8Array({ maxLength: 48 }))
  .map(([cmd, data]) => frame(cmd, [...data]));

describe("milter codec: properties", () => {
  it("decode(encode(command)) is the command", () => {
    fc.assert(
      fc.property(commandArb, (c) => {
        assert.deepEqual(decodeCommands(encodeCommand(c)).commands, [c]);
      }),
      { numRuns: 2000 },
    );
  });

  it("decode(encode(reply)) is the reply", () => {
    fc.assert(
      fc.property(replyArb, (r) => {
        assert.deepEqual(decodeReplies(encodeReply(r)).replies, [r]);
      }),
      { numRuns: 1000 },
    );
  });

  it("arbitrary bytes throw nothing but ProtocolError", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), (b) => {
        onlyProtocolErrors(() => decodeCommands(Buffer.from(b)));
        onlyProtocolErrors(() => decodeReplies(Buffer.from(b)));
      }),
      { numRuns: 3000 },
    );
  });

  it("arbitrary payloads in well-framed packets throw nothing but ProtocolError", () => {
    fc.assert(
      fc.property(framedJunk, framedReplyJunk, (cmd, reply) => {
        onlyProtocolErrors(() => decodeCommands(cmd));
        onlyProtocolErrors(() => decodeReplies(reply));
      }),
      { numRuns: 3000 },
    );
  });
});
