// Settings every role shares: how to reach NATS, the names of the stream and bucket, the lease
// TTL, logging and the health/metrics listener. Role schemas spread these into their own.
import {
  DURATION_FORM,
  booleanSetting,
  parseDuration,
  durationSetting,
  enumSetting,
  integerSetting,
  type Setting,
} from "./config.ts";
import { parseListenAddress } from "./listen-address.ts";

function optional(env: string, doc: string, form: string): Setting<string | undefined> {
  return {
    env,
    doc,
    form,
    default: undefined,
    parse: (raw) => raw,
  };
}

export function listenSetting(env: string, doc: string, def: string | undefined): Setting<string> {
  return {
    env,
    doc,
    default: def,
    form: "host:port ([::1]:port for IPv6), or a unix socket path",
    parse: (raw) => {
      parseListenAddress(raw);
      return raw;
    },
  };
}

const NATS_NAME = /^[-\w]{1,64}$/;

function natsName(env: string, doc: string, def: string): Setting<string> {
  return {
    env,
    doc,
    default: def,
    form: "letters, digits, '-' and '_' (at most 64)",
    parse: (raw) => {
      if (!NATS_NAME.test(raw)) throw new Error("not a valid NATS stream or bucket name");
      return raw;
    },
  };
}

export const natsSettings = {
  natsUrl: {
    env: "RELAYLEASE_NATS_URL",
    doc: "NATS servers to connect to, comma-separated.",
    default: "nats://127.0.0.1:4222",
    form: "nats://host:port[,nats://host:port...]",
    parse: (raw: string): string[] => {
      const urls = raw
        .split(",")
        .map((u) => u.trim())
        .filter((u) => u !== "");
      if (urls.length === 0) throw new Error("no server given");
      for (const u of urls) {
        if (!/^((nats|tls|wss?):\/\/)?[^\s/]+(:\d+)?$/.test(u)) throw new Error(`bad URL ${u}`);
      }
      return urls;
    },
  } satisfies Setting<string[]>,
  natsCreds: optional(
    "RELAYLEASE_NATS_CREDS",
    "NATS credentials file (JWT + NKey seed).",
    "a path",
  ),
  natsUser: optional("RELAYLEASE_NATS_USER", "NATS user name.", "a user name"),
  natsPassword: optional("RELAYLEASE_NATS_PASSWORD", "NATS password.", "a password"),
  natsTlsCa: optional("RELAYLEASE_NATS_TLS_CA", "CA bundle to verify the NATS servers.", "a path"),
  natsTlsCert: optional("RELAYLEASE_NATS_TLS_CERT", "Client certificate for NATS mTLS.", "a path"),
  natsTlsKey: optional("RELAYLEASE_NATS_TLS_KEY", "Client key for NATS mTLS.", "a path"),
  stream: natsName(
    "RELAYLEASE_STREAM",
    "JetStream stream that carries login events.",
    "RELAY_LOGINS",
  ),
  bucket: natsName("RELAYLEASE_BUCKET", "KV bucket that holds the leases.", "relay-leases"),
  degradedTtl: booleanSetting(
    "RELAYLEASE_DEGRADED_TTL",
    "Allow NATS servers without per-message TTL (before 2.11.2): bucket-wide TTL only, expiry enforced by the mirrors' clocks.",
    "false",
  ),
};

export const leaseTtlSetting = durationSetting(
  "RELAYLEASE_LEASE_TTL",
  "How long a login lets its address relay.",
  "30m",
  1000,
);

export const serviceTtlsSetting: Setting<ReadonlyMap<string, number>> = {
  env: "RELAYLEASE_SERVICE_TTLS",
  doc: "Lease TTL per service, overriding RELAYLEASE_LEASE_TTL for the services named.",
  default: "",
  form: `service=duration pairs separated by commas, e.g. imap=2h,pop3=30m (${DURATION_FORM})`,
  parse: (raw) => {
    const out = new Map<string, number>();
    for (const item of raw
      .split(",")
      .map((x) => x.trim())
      .filter((x) => x !== "")) {
      const m = /^([a-z][a-z0-9_-]{0,31})=(.+)$/.exec(item);
      if (m === null) throw new Error(`bad item ${JSON.stringify(item)}`);
      const ms = parseDuration(m[2] ?? "");
      if (ms < 1000) throw new Error(`${m[1] ?? ""}: shorter than 1s`);
      out.set(m[1] ?? "", ms);
    }
    return out;
  },
};

export const replicasSetting = integerSetting(
  "RELAYLEASE_REPLICAS",
  "Replicas of the stream and bucket (3 in a cluster).",
  "1",
  1,
  5,
);

export const processSettings = {
  metricsListen: listenSetting(
    "RELAYLEASE_METRICS_LISTEN",
    "Where to serve /metrics (Prometheus), /healthz and /readyz.",
    "127.0.0.1:9464",
  ),
  logLevel: enumSetting("LOG_LEVEL", "Log level.", "info", [
    "fatal",
    "error",
    "warn",
    "info",
    "debug",
    "trace",
  ]),
};
