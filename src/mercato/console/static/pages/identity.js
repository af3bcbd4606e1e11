// Identity: accounts (search, roles, disable/enable), machine clients (create, with the secret shown this once
// and kept nowhere, delete) and signing keys (published keys, rotate).
import { request } from "../api.js";
import { action, badge, count, errorBox, fill, flash, h, panel, statusBadge, table, when } from "../dom.js";

export function mount(main) {
  const search = h("input", { name: "account_search", placeholder: "username or e-mail", type: "search" });
  const accounts = h("div", { "data-testid": "accounts" });
  const clients = h("div", { "data-testid": "clients" });
  const created = h("div", { "data-testid": "client-created" });
  const keys = h("div", { "data-testid": "keys" });
  const message = h("div");
  const form = clientForm(created, message, () => showClients(clients, message));
  main.append(
    message,
    panel("Accounts", h("div", { class: "row" }, h("label", {}, "search", search)), accounts),
    panel("Machine clients", form, created, clients),
    panel("Signing keys", keys),
  );
  const refresh = () => Promise.all([
    showAccounts(accounts, message, search.value.trim().toLowerCase(), refresh),
    showClients(clients, message),
    showKeys(keys, message),
  ]);
  search.addEventListener("input", () => showAccounts(accounts, message, search.value.trim().toLowerCase(), refresh));
  return { refresh };
}

async function showAccounts(node, message, needle, refresh) {
  try {
    const page = await request("/api/v1/admin/accounts?limit=500");
    const matches = page.items.filter((a) => !needle || a.username.toLowerCase().includes(needle) || a.email.toLowerCase().includes(needle));
    const setRoles = async (account, roles) => {
      await request(`/api/v1/admin/accounts/${encodeURIComponent(account.id)}/roles`, { method: "PUT", body: { roles } });
      flash(message, `${account.username}: roles now ${roles.join(", ")}.`);
      await refresh();
    };
    // Disabling ends the person's tokens at once and refuses their logins until enabled again.
    const setStatus = async (account, status) => {
      if (status === "disabled" && !window.confirm(`Disable ${account.username}? They are signed out everywhere and cannot log in until enabled again.`)) return;
      await request(`/api/v1/admin/accounts/${encodeURIComponent(account.id)}/status`, { method: "PUT", body: { status } });
      flash(message, `${account.username}: ${status === "disabled" ? "disabled" : "enabled again"}.`);
      await refresh();
    };
    const onError = (error) => flash(message, error.message, "bad");
    fill(
      node,
      h("p", { class: "muted" }, `${matches.length} of ${count(page.total, "account")}`),
      table(
        [
          ["username", (a) => h("strong", {}, a.username)],
          ["e-mail", (a) => a.email],
          ["name", (a) => a.display_name || ""],
          ["roles", (a) => a.roles.map((r) => badge(r, r === "admin" ? "warn" : "muted"))],
          ["status", (a) => statusBadge(a.status)],
          ["created", (a) => when(a.created_at)],
          ["", (a) => (a.roles.includes("admin")
            ? action("Remove admin", () => setRoles(a, a.roles.filter((r) => r !== "admin")), { onError })
            : action("Make admin", () => setRoles(a, [...a.roles, "admin"]), { onError }))],
        ["", (a) => (a.status === "disabled"
            ? action("Enable", () => setStatus(a, "active"), { onError, testid: `enable-${a.username}` })
            : action("Disable", () => setStatus(a, "disabled"), { kind: "danger", onError, testid: `disable-${a.username}` }))],
        ],
        matches,
        { empty: "no account matches" },
      ),
    );
  } catch (error) {
    fill(node, errorBox(error));
  }
}

function clientForm(created, message, reload) {
  const name = h("input", { name: "client_name", required: true, placeholder: "nightly reporter" });
  const clientId = h("input", { name: "client_id", placeholder: "(generated)" });
  const scopes = h("input", { name: "client_scopes", placeholder: "catalog.read", value: "catalog.read" });
  const budget = h("input", { name: "client_budget", type: "number", min: 1, placeholder: "(default)" });
  const form = h("form", { class: "row", "data-testid": "client-form" },
    h("label", {}, "name", name), h("label", {}, "client id", clientId),
    h("label", {}, "scopes (space separated)", scopes), h("label", {}, "token budget / hour", budget),
    h("button", { type: "submit", class: "primary" }, "Create client"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: name.value.trim(), scopes: scopes.value.split(/[\s,]+/).filter(Boolean) };
    if (clientId.value.trim()) body.client_id = clientId.value.trim();
    if (budget.value) body.token_budget_per_hour = Number(budget.value);
    try {
      const client = await request("/api/v1/admin/clients", { method: "POST", body });
      // The secret lives in this box only: not stored, not in the list, gone on reload.
      fill(created, h("div", { class: "notice ok" },
        h("p", {}, `Client `, h("code", {}, client.client_id), " created. Copy its secret now: it is shown this once and cannot be read again."),
        h("div", { class: "secret", "data-testid": "client-secret" }, client.client_secret),
        h("button", { type: "button", onclick: () => fill(created) }, "I have copied it")));
      form.reset();
      await reload();
    } catch (error) {
      flash(message, error.message, "bad");
    }
  });
  return form;
}

async function showClients(node, message) {
  const page = await request("/api/v1/admin/clients?limit=500");
  fill(
    node,
    table(
      [
        ["client id", (c) => h("code", { "data-client": c.client_id }, c.client_id)],
        ["name", (c) => c.name],
        ["scopes", (c) => c.scopes.join(" ")],
        ["grants", (c) => c.grant_types.join(" ")],
        ["budget / hour", (c) => (c.token_budget_per_hour === null ? "default" : String(c.token_budget_per_hour))],
        ["created", (c) => when(c.created_at)],
        ["", (c) => action("Delete", async () => {
          if (!window.confirm(`Delete client ${c.client_id}? Its tokens stop working.`)) return;
          await request(`/api/v1/admin/clients/${encodeURIComponent(c.client_id)}`, { method: "DELETE" });
          flash(message, `Client ${c.client_id} deleted.`);
          await showClients(node, message);
        }, { kind: "danger", onError: (e) => flash(message, e.message, "bad") })],
      ],
      page.items,
      { empty: "no machine client" },
    ),
  );
}

async function showKeys(node, message) {
  // The published keys are public (JWKS); rotating needs the admin.
  const answer = await fetch("/.well-known/jwks.json", { cache: "no-store" });
  const jwks = answer.ok ? await answer.json() : { keys: [] };
  fill(
    node,
    table(
      [
        ["key id", (k) => h("code", {}, k.kid)],
        ["algorithm", (k) => k.alg || ""],
        ["curve", (k) => k.crv || ""],
        ["use", (k) => k.use || ""],
      ],
      jwks.keys || [],
      { empty: "no published key" },
    ),
    h("p", { class: "row" }, action("Rotate signing key", async () => {
      if (!window.confirm("Sign new tokens with a new key? The current one keeps verifying until its tokens expire.")) return;
      const rotated = await request("/api/v1/admin/keys/rotate", { method: "POST" });
      flash(message, `New signing key ${rotated.kid} (${rotated.alg}); published: ${rotated.published.join(", ")}.`);
      await showKeys(node, message);
    }, { kind: "danger", onError: (e) => flash(message, e.message, "bad") })),
  );
}
