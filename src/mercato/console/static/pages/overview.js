// Overview: every service's readiness and event plumbing, orders of the last hour, jobs, and
// each upstream's token budget; anything unhealthy is marked red (or amber when slipping).
import { request } from "../api.js";
import { badge, duration, errorBox, fill, h, panel, relative, statusBadge, table } from "../dom.js";
import { readiness } from "./common.js";

// An event waiting longer than this to leave its outbox, or an order pending longer, is amber.
const SLOW_SECONDS = 30;

export function mount(main) {
  const services = h("div", { class: "cards", "data-testid": "services" });
  const orders = h("div", { "data-testid": "orders-last-hour" });
  const jobs = h("div");
  const upstreams = h("div");
  main.append(
    panel("Services", services),
    h("div", { class: "split" }, panel("Orders in the last hour", orders), panel("Upstream token budgets", upstreams)),
    panel("Jobs", jobs),
  );
  return {
    async refresh() {
      await Promise.all([
        showServices(services),
        guard(orders, () => showOrders(orders)),
        guard(jobs, () => showJobs(jobs)),
        guard(upstreams, () => showUpstreams(upstreams)),
      ]);
    },
  };
}

async function guard(node, show) {
  try {
    await show();
  } catch (error) {
    fill(node, errorBox(error));
  }
}

async function showServices(node) {
  let ready;
  try {
    ready = await readiness();
  } catch (error) {
    fill(node, errorBox(error));
    return;
  }
  const entries = Object.entries(ready.services || {});
  const stats = await Promise.all(
    entries.map(([name]) => request(`/api/v1/events/${encodeURIComponent(name)}/stats`).catch((error) => ({ error }))),
  );
  fill(node, entries.map(([name, state], index) => card(name, state, stats[index])));
}

function card(name, state, stats) {
  const problems = [];
  const slipping = [];
  if (state.status !== "ok") problems.push("not ready");
  const rows = [];
  // Embedded: each check of the service; through the gateway: each replica's answer.
  for (const [check, outcome] of Object.entries(state.checks || state.replicas || {})) {
    rows.push([check, outcome === "ok" ? badge("ok", "ok") : badge(String(outcome), "bad")]);
  }
  if (stats.error) {
    rows.push(["events", badge(stats.error.message, "bad")]);
    problems.push("event stats unreadable");
  } else {
    const age = stats.oldest_unsent_age_seconds;
    if (stats.dead_letters > 0) problems.push("dead letters");
    if (age !== null && age > SLOW_SECONDS) slipping.push("outbox slow");
    rows.push(
      ["outbox backlog", String(stats.outbox_backlog)],
      ["oldest unsent", age === null ? "—" : duration(age)],
      ["queued incoming", String(stats.queued_incoming)],
      ["inbox", String(stats.inbox_size)],
      ["dead letters", stats.dead_letters > 0 ? badge(String(stats.dead_letters), "bad") : "0"],
    );
  }
  const kind = problems.length ? "bad" : slipping.length ? "warn" : "ok";
  return h(
    "div",
    { class: `card ${kind === "ok" ? "" : kind}`, "data-service": name, "data-health": kind },
    h("h3", {}, h("span", {}, name), statusBadge(state.status)),
    h("dl", {}, rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])),
    problems.length || slipping.length ? h("p", { class: "muted" }, [...problems, ...slipping].join(", ")) : null,
  );
}

async function showOrders(node) {
  // Newest first: the orders of the last hour are the head of the list.
  const page = await request("/api/v1/admin/orders?limit=500");
  const since = Date.now() - 3600 * 1000;
  const recent = page.items.filter((order) => Date.parse(order.created_at) >= since);
  const counts = { pending: 0, completed: 0, failed: 0 };
  let stuck = 0;
  for (const order of recent) {
    counts[order.status] = (counts[order.status] || 0) + 1;
    if (order.status === "pending" && (Date.now() - Date.parse(order.created_at)) / 1000 > SLOW_SECONDS) stuck += 1;
  }
  const capped = recent.length === page.items.length && page.total > page.items.length;
  fill(
    node,
    h("div", { class: "cards" }, Object.entries(counts).map(([status, count]) =>
      h("div", { class: `card ${status === "failed" && count ? "bad" : ""}`, "data-status": status },
        h("h3", {}, statusBadge(status), h("strong", {}, `${count}${capped ? "+" : ""}`))))),
    stuck
      ? h("p", { class: "notice warn" }, `${stuck} pending for more than ${SLOW_SECONDS} s: `, h("a", { href: `#/orders/pending-over/${SLOW_SECONDS}` }, "find them"))
      : null,
  );
}

async function showJobs(node) {
  const page = await request("/api/v1/jobs");
  fill(
    node,
    table(
      [
        ["job", (job) => h("a", { href: "#/jobs" }, job.name)],
        ["schedule", (job) => (job.enabled ? job.schedule : h("span", { class: "muted" }, `disabled: ${job.disabled_reason || ""}`))],
        ["next run", (job) => relative(job.next_run_at)],
        ["last run", (job) => (job.last_run ? [statusBadge(job.last_run.status), " ", relative(job.last_run.finished_at || job.last_run.requested_at)] : "never")],
      ],
      page.items,
      { rowClass: (job) => (job.last_run && job.last_run.status === "failed" ? "bad" : null) },
    ),
  );
}

/** A circuit breaker's state as a badge: open stands out (red), half-open warns, none is "—". */
export function circuitBadge(state) {
  const kinds = { closed: "ok", half_open: "warn", open: "bad" };
  if (!state) return badge("—", "muted");
  return h("span", { "data-circuit": state }, badge(state.replace("_", "-"), kinds[state] || "muted"));
}

/** The circuit column, when any upstream's status has a `circuit_state`, else null. */
export function circuits(statuses) {
  const shown = Object.values(statuses).some((st) => st.circuit_state !== undefined);
  return shown ? ["circuit", ([, st]) => circuitBadge(st.circuit_state)] : null;
}

/** `requests_last_hour` of `budget_per_hour` as a bar: amber from 80 %, red when spent. */
export function budgetMeter(used, budget) {
  const share = budget ? Math.min(1, used / budget) : 0;
  const kind = share >= 1 ? "bad" : share >= 0.8 ? "warn" : "";
  const bar = h("span");
  bar.style.width = `${Math.round(share * 100)}%`; // a style property, not a style attribute: CSP allows it
  return h("span", {}, h("span", { class: `meter ${kind}` }, bar), ` ${used} / ${budget}`);
}

async function showUpstreams(node) {
  const statuses = await request("/api/v1/integration/token/status");
  fill(
    node,
    table(
      [
        ["upstream", ([name]) => name],
        ["token", ([, st]) => (st.has_token ? badge("cached", "ok") : badge("none", "muted"))],
        ["requests / budget (hour)", ([, st]) => budgetMeter(st.requests_last_hour, st.budget_per_hour)],
        // Shown where the server reports a circuit state with the token status.
        circuits(statuses),
        ["last error", ([, st]) => st.last_error || "—"],
      ].filter(Boolean),
      Object.entries(statuses),
      {
        empty: "no upstream configured",
        rowClass: ([, st]) =>
          (st.requests_last_hour >= st.budget_per_hour || st.last_error || st.circuit_state === "open" ? "bad" : null),
      },
    ),
  );
}
