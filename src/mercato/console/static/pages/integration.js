// Integration: each upstream's cached-token state (never the token), its requests in the last
// hour against the budget, circuit state where the server reports it; "forget token" first says
// how much of the budget remains, since the next call will spend one to fetch a new token.
import { request } from "../api.js";
import { action, badge, fill, flash, h, panel, table, when } from "../dom.js";
import { budgetMeter, circuits } from "./overview.js";

export function mount(main) {
  const upstreams = h("div", { "data-testid": "upstreams" });
  const message = h("div");
  main.append(panel("Upstream tokens", message, upstreams));
  const refresh = () => show(upstreams, message, refresh);
  return { refresh };
}

async function show(node, message, refresh) {
  const statuses = await request("/api/v1/integration/token/status");
  fill(
    node,
    table(
      [
        ["upstream", ([name]) => h("strong", {}, name)],
        ["token", ([, st]) => (st.has_token ? badge("cached", "ok") : badge("none", "muted"))],
        ["expires", ([, st]) => when(st.expires_at)],
        ["renews", ([, st]) => when(st.renew_at)],
        ["requests / budget (last hour)", ([, st]) => budgetMeter(st.requests_last_hour, st.budget_per_hour)],
        // Shown where the server reports a circuit state with the token status.
        circuits(statuses),
        ["last error", ([, st]) => (st.last_error ? h("code", {}, st.last_error) : "—")],
        ["", ([name, st]) => action("Forget token", async () => {
          const remaining = Math.max(0, st.budget_per_hour - st.requests_last_hour);
          const ok = window.confirm(
            `${name}: ${remaining} of ${st.budget_per_hour} token requests remain this hour. ` +
            "Forgetting the cached token makes the next call fetch a new one, spending one of them. Forget it?",
          );
          if (!ok) return;
          await request(`/api/v1/integration/token?upstream=${encodeURIComponent(name)}`, { method: "DELETE" });
          flash(message, `${name}: cached token forgotten (${remaining} requests remained this hour).`);
          await refresh();
        }, { kind: "danger", testid: `forget-${name}`, onError: (e) => flash(message, e.message, "bad") })],
      ].filter(Boolean),
      Object.entries(statuses),
      {
        empty: "no upstream configured",
        // An open circuit refuses every call to that upstream: the row stands out like an error.
        rowClass: ([, st]) =>
          (st.requests_last_hour >= st.budget_per_hour || st.last_error || st.circuit_state === "open"
            ? "bad"
            : st.requests_last_hour >= 0.8 * st.budget_per_hour || st.circuit_state === "half_open"
              ? "warn"
              : null),
      },
    ),
  );
}
