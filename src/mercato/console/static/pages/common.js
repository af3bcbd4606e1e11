// What several pages share: the services of this installation, read from `/ready`.
import { request } from "../api.js";

// Every service of a full installation, for when `/ready` cannot be read.
export const KNOWN_SERVICES = ["accounts", "identity", "catalog", "wallet", "orders", "integration"];

/** `/ready`'s answer (200 or 503: both say each service's state, in embedded mode and through
 * the gateway alike). */
export function readiness() {
  return request("/ready", { accept: [503] });
}

/** The services `/ready` names. */
export async function serviceNames() {
  try {
    const names = Object.keys((await readiness()).services || {});
    return names.length ? names : KNOWN_SERVICES;
  } catch {
    return KNOWN_SERVICES;
  }
}
