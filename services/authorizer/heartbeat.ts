// The authorizers' heartbeat: every HEARTBEAT_INTERVAL_MS each replica writes the heartbeat key,
// so a mirror that hears nothing for a few intervals knows its watch has stalled rather than the
// bucket being quiet. A failed write is logged and retried at the next beat.
import type { KV } from "@nats-io/kv";
import { HEARTBEAT_INTERVAL_MS, HEARTBEAT_KEY } from "../../shared/contract.ts";
import { errorMessage } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";
import type { Component } from "../../shared/process.ts";

export function encodeHeartbeat(authorizer: string, at: number): Uint8Array {
  return Buffer.from(JSON.stringify({ authorizer, at: new Date(at).toISOString() }));
}

export function startHeartbeat(kv: KV, authorizer: string, log: Logger): Component {
  let failing = false;
  const beat = async (): Promise<void> => {
    try {
      await kv.put(HEARTBEAT_KEY, encodeHeartbeat(authorizer, Date.now()));
      if (failing) log.info("heartbeat written again");
      failing = false;
    } catch (err) {
      if (!failing) log.warn({ err: errorMessage(err) }, "heartbeat write failed");
      failing = true;
    }
  };
  let inFlight = beat();
  const timer = setInterval(() => {
    inFlight = beat();
  }, HEARTBEAT_INTERVAL_MS);
  timer.unref();
  return {
    name: "heartbeat",
    stop: async () => {
      clearInterval(timer);
      await inFlight;
    },
  };
}
