// What the client-only front doors (socketmap, whoson) learn of a client from the decision.
export type LeaseAnswer =
  | { readonly kind: "leased"; readonly expiresAt: number; readonly user?: string | undefined }
  | { readonly kind: "not-leased" }
  /** The mirror is stale and does not know this address: the fail mode applies. */
  | { readonly kind: "stale" };
