// One-shot NATS connections for the admin commands: fail at once when no server answers.
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { connectOptions, type NatsConfig } from "../../shared/nats.ts";

export async function withNats<T>(
  config: NatsConfig,
  name: string,
  use: (nc: NatsConnection) => Promise<T>,
): Promise<T> {
  const nc = await connect(connectOptions(config, name, false));
  try {
    return await use(nc);
  } finally {
    await nc.close();
  }
}
