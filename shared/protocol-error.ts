/**
 * The one error every codec throws for a peer's bad bytes. A server that catches it logs a
 * warning, counts it and closes or answers safely; anything else a codec throws is our own bug.
 * Construct it as `new ProtocolError(message, { cause })` (Error's own constructor).
 */
export class ProtocolError extends Error {
  override name = "ProtocolError";
}
