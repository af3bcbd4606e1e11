// The console's only way to Mercato: the public HTTP API of this same origin, with the admin's
// own bearer token. Sign-in is `POST /api/v1/auth/login`; the access token is renewed before it
// expires (`POST /api/v1/auth/refresh`) and sign-out revokes the session (`/auth/logout`).
//
// The tokens are kept in sessionStorage: they survive a reload of this tab (an operator pressing
// F5 stays signed in) but go when the tab is closed, are never shared with other tabs, and are
// never sent by the browser on its own the way a cookie is (nothing for another site to ride on).
// localStorage would keep a refresh token on disk for days; the page's Content-Security-Policy
// (scripts from this origin only) is what keeps other code from reading either. A tab duplicated
// by the browser copies its sessionStorage: the first of the two to renew spends the refresh
// token, the other's renewal then presents a spent one, and identity ends the session for both
// (reuse detection), so a duplicated tab signs in again instead of sharing a session.

const KEY = "mercato.console.session";
let session = load();
let refreshing = null;
let timer = null;
const signedOut = new Set();

/** An answer that is not a success, with its problem+json body when it has one. */
export class ApiError extends Error {
  constructor(status, problem, path) {
    const detail = (problem && (problem.detail || problem.title)) || `HTTP ${status}`;
    super(`${detail} (${status})`);
    this.status = status;
    this.problem = problem || {};
    this.path = path;
  }

  /** Whether the server has no such endpoint at all (a route not deployed here), as opposed to
   * a resource that does not exist: FastAPI's own 404 says "Not Found", the gateway's nginx
   * "no service answers this path", while a missing order or event names what is missing. */
  get missing() {
    const detail = this.problem.detail || "";
    return (this.status === 404 && (detail === "Not Found" || detail === "no service answers this path"))
      || this.status === 405;
  }
}

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || "null");
  } catch {
    return null;
  }
}

function keep(pair) {
  const ttl = Math.max(1, Number(pair.expires_in) || 60) * 1000;
  const now = Date.now();
  // Renewed when a fifth of its life, at most a minute, remains: early enough to never send an
  // expired token, late enough not to spend refresh tokens for nothing.
  session = {
    access: pair.access_token,
    refresh: pair.refresh_token,
    renewAt: now + ttl - Math.min(60000, ttl / 5),
  };
  sessionStorage.setItem(KEY, JSON.stringify(session));
  schedule();
}

function forget() {
  session = null;
  sessionStorage.removeItem(KEY);
  clearTimeout(timer);
  for (const listener of signedOut) listener();
}

function schedule() {
  clearTimeout(timer);
  if (!session) return;
  // Timers of a hidden tab are slowed down; request() also renews a token found overdue.
  timer = setTimeout(() => renew().catch(() => {}), Math.max(1000, session.renewAt - Date.now()));
}

async function problemOf(answer) {
  try {
    return await answer.json();
  } catch {
    return null;
  }
}

/** Whether someone is signed in (in this tab). */
export function signedIn() {
  return session !== null;
}

/** Call `listener` when the session ends (sign-out, or a refresh the server refused). */
export function onSignedOut(listener) {
  signedOut.add(listener);
}

/** Sign in with the person's own credentials. */
export async function login(usernameOrEmail, password) {
  const path = "/api/v1/auth/login";
  const answer = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username_or_email: usernameOrEmail, password }),
  });
  if (!answer.ok) throw new ApiError(answer.status, await problemOf(answer), path);
  keep(await answer.json());
}

/** A new token pair for the refresh token; one at a time (a refresh token is spent once, and
 * presenting a spent one ends the whole session). */
export function renew() {
  if (!session) return Promise.reject(new Error("not signed in"));
  if (!refreshing) {
    const spent = session.refresh;
    refreshing = (async () => {
      const path = "/api/v1/auth/refresh";
      const answer = await fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: spent }),
      });
      if (!answer.ok) {
        const error = new ApiError(answer.status, await problemOf(answer), path);
        if (answer.status === 400 || answer.status === 401) forget();
        throw error;
      }
      keep(await answer.json());
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

/** Revoke the session on the server, then forget it here whatever the answer. */
export async function logout() {
  if (!session) return;
  const { access, refresh } = session;
  try {
    await fetch("/api/v1/auth/logout", {
      method: "POST",
      headers: { Authorization: `Bearer ${access}`, "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: refresh }),
    });
  } finally {
    forget();
  }
}

/** Call the API: `body` is sent as JSON; answers the parsed JSON (null for no content), or the
 * Response itself with `raw`. `accept` lists error statuses whose body is still the answer
 * (`/ready` says 503 with every service's state). */
export async function request(path, { method = "GET", body, raw = false, accept = [] } = {}) {
  if (!session) throw new ApiError(401, { detail: "not signed in" }, path);
  if (Date.now() >= session.renewAt) await renew();
  let answer = await send(path, method, body);
  if (answer.status === 401 && session) {
    // Revoked or expired on the way (a key rotation, a clock skew): one renewal, one retry.
    await renew();
    answer = await send(path, method, body);
  }
  if (!answer.ok && !accept.includes(answer.status)) {
    throw new ApiError(answer.status, await problemOf(answer), path);
  }
  if (raw) return answer;
  if (answer.status === 204) return null;
  return answer.json();
}

function send(path, method, body) {
  const headers = { Authorization: `Bearer ${session.access}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
}

/** A query string from the non-empty values of `params`. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// A reloaded tab renews on the same schedule as the one that signed in.
if (session) schedule();
