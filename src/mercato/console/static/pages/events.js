// Events: per service, the events it published (payloads with secret fields masked by the
// server) and its dead letters with their last error; replay one or all.
import { ApiError, query, request } from "../api.js";
import { action, count, errorBox, fill, flash, h, notAvailable, panel, shortId, statusBadge, table, when } from "../dom.js";
import { serviceNames } from "./common.js";

// #/events/<service> opens a service; #/events/<service>/<correlation id> its events of one
// correlation (an order's timeline links here).
export function mount(main, { arg }) {
  const service = h("select", { name: "service" });
  const type = h("input", { name: "type", placeholder: "order.placed" });
  const subject = h("input", { name: "subject", placeholder: "subject (aggregate id)", size: 36 });
  const correlation = h("input", { name: "correlation_id", placeholder: "correlation id", size: 36 });
  const recent = h("div", { "data-testid": "events-list" });
  const letters = h("div", { "data-testid": "dead-letters" });
  const message = h("div");
  const filters = h("form", { class: "row" },
    h("label", {}, "service", service), h("label", {}, "type", type), h("label", {}, "subject", subject),
    h("label", {}, "correlation id", correlation), h("button", { type: "submit", class: "primary" }, "Show"));
  main.append(panel("Dead letters", message, letters), panel("Recent events", filters, recent));
  const choose = (target) => {
    const [name, ...rest] = (target || "").split("/");
    if (name) service.value = name;
    correlation.value = rest.join("/");
  };
  const ready = serviceNames().then((names) => {
    fill(service, names.map((name) => h("option", { value: name }, name)));
    choose(arg);
  });
  const refresh = async () => {
    await ready;
    const name = service.value;
    await Promise.all([
      showEvents(recent, name, { type: type.value.trim(), subject: subject.value.trim(), correlation_id: correlation.value.trim() }),
      showDeadLetters(letters, message, name, refresh),
    ]);
  };
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    refresh();
  });
  service.addEventListener("change", () => refresh());
  return { refresh, open: async (target) => { await ready; choose(target); await refresh(); } };
}

async function showEvents(node, service, filters) {
  try {
    const page = await request(`/api/v1/events/${encodeURIComponent(service)}/events${query({ ...filters, limit: 50 })}`);
    fill(
      node,
      h("p", { class: "muted" }, `${count(page.total, "event")} kept for ${service}; newest ${page.items.length} shown`),
      table(
        [
          ["time", (e) => when(e.occurred_at)],
          ["type", (e) => h("strong", {}, e.type)],
          ["subject", (e) => shortId(e.subject)],
          ["status", (e) => statusBadge(e.status)],
          ["correlation id", (e) => h("a", { href: `#/events/${service}/${encodeURIComponent(e.correlation_id)}`, title: "this correlation's events" }, h("code", {}, e.correlation_id))],
          ["payload", (e) => h("details", {}, h("summary", {}, shortId(e.id)), h("pre", {}, JSON.stringify(e.data, null, 2)))],
        ],
        page.items,
        { empty: "no event matches" },
      ),
    );
  } catch (error) {
    fill(node, error instanceof ApiError && error.missing
      ? notAvailable("The event log", `GET /api/v1/events/${service}/events`)
      : errorBox(error));
  }
}

async function showDeadLetters(node, message, service, refresh) {
  let page;
  try {
    page = await request(`/api/v1/events/${encodeURIComponent(service)}/dead-letters?limit=100`);
  } catch (error) {
    fill(node, errorBox(error));
    return;
  }
  const replay = async (letter) => {
    await request(`/api/v1/events/${encodeURIComponent(service)}/dead-letters/${encodeURIComponent(letter.id)}/replay`, { method: "POST" });
  };
  const onError = (error) => flash(message, error.message, "bad");
  fill(
    node,
    page.items.length
      ? h("p", { class: "row" }, h("span", { class: "badge bad" }, `${count(page.total, "dead letter")} in ${service}`),
        action("Replay all shown", async () => {
          for (const letter of page.items) await replay(letter);
          flash(message, `Replayed ${count(page.items.length, "dead letter")}.`);
          await refresh();
        }, { onError, testid: "replay-all" }))
      : null,
    table(
      [
        ["failed", (d) => when(d.failed_at)],
        ["consumer", (d) => d.consumer],
        ["event", (d) => [h("strong", {}, d.event_type), " ", shortId(d.event_id)]],
        ["attempts", (d) => String(d.attempts)],
        ["last error", (d) => h("code", {}, d.error)],
        ["", (d) => action("Replay", async () => {
          await replay(d);
          flash(message, `Replayed ${d.event_type} (${d.event_id}) to ${d.consumer}.`);
          await refresh();
        }, { onError, testid: "replay" })],
      ],
      page.items,
      { empty: `no dead letter in ${service}`, rowClass: () => "bad" },
    ),
  );
}
