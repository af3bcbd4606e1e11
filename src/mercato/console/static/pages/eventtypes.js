// Event types: every event Mercato publishes, read from its AsyncAPI 3 document
// (`/asyncapi.json`, generated from the services' contracts): who publishes it, who consumes it,
// and the fields of its payload. The document changes only with a new version: read once.
import { ApiError, request } from "../api.js";
import { errorBox, fill, h, notAvailable, panel, table } from "../dom.js";

export function mount(main) {
  const node = h("div", { "data-testid": "event-types" });
  const filter = h("input", { name: "event_filter", type: "search", placeholder: "order." });
  main.append(
    panel(
      "Event types",
      h("p", { class: "muted" }, "From the AsyncAPI 3 document at ", h("a", { href: "/asyncapi.json" }, "/asyncapi.json"),
        ": each type travels in the envelope (id, type, source, subject, correlation id, data), at least once, de-duplicated by each consumer's inbox."),
      h("div", { class: "row" }, h("label", {}, "filter", filter)),
      node,
    ),
  );
  let doc = null;
  const show = () => render(node, doc, filter.value.trim().toLowerCase());
  filter.addEventListener("input", () => doc && show());
  return {
    async refresh() {
      if (doc) return;
      try {
        doc = await request("/asyncapi.json");
      } catch (error) {
        fill(node, error instanceof ApiError && error.missing ? notAvailable("The AsyncAPI document", "GET /asyncapi.json") : errorBox(error));
        return;
      }
      show();
    },
  };
}

function refName(ref) {
  return String(ref || "").split("/").pop();
}

/** Each event type with its producer, consumers, summary and payload schema. */
function eventTypes(doc) {
  const messages = (doc.components && doc.components.messages) || {};
  const schemas = (doc.components && doc.components.schemas) || {};
  const types = new Map();
  for (const [name, message] of Object.entries(messages)) {
    const parts = (message.payload && message.payload.allOf) || [];
    const data = parts.map((p) => p.properties && p.properties.data).find(Boolean);
    types.set(name, { type: message.name || name, summary: message.summary || "", producer: "", consumers: [], schema: data ? schemas[refName(data.$ref)] : null });
  }
  for (const operation of Object.values(doc.operations || {})) {
    const who = String(operation.title || "").split(" ")[0];
    for (const ref of operation.messages || []) {
      const entry = types.get(refName(ref.$ref));
      if (!entry) continue;
      if (operation.action === "send") entry.producer = who;
      else if (!entry.consumers.includes(who)) entry.consumers.push(who);
    }
  }
  return [...types.values()].sort((a, b) => a.type.localeCompare(b.type));
}

function typeOf(schema) {
  if (!schema) return "";
  if (schema.$ref) return refName(schema.$ref);
  if (schema.anyOf) return schema.anyOf.map(typeOf).join(" | ");
  if (schema.type === "array") return `${typeOf(schema.items)}[]`;
  return schema.format ? `${schema.type} (${schema.format})` : schema.type || "";
}

function render(node, doc, needle) {
  const shown = eventTypes(doc).filter((e) => !needle || e.type.includes(needle) || e.producer.includes(needle) || e.consumers.some((c) => c.includes(needle)));
  fill(
    node,
    shown.length ? null : h("p", { class: "muted" }, "no event type matches"),
    shown.map((e) => {
      const properties = Object.entries((e.schema && e.schema.properties) || {});
      const required = new Set((e.schema && e.schema.required) || []);
      return h(
        "details",
        { class: "card", "data-event-type": e.type },
        h("summary", {}, h("strong", {}, e.type), ` · from ${e.producer || "?"} to ${e.consumers.join(", ") || "no consumer"} · `, h("span", { class: "muted" }, e.summary)),
        table(
          [
            ["field", ([name]) => h("code", {}, name)],
            ["type", ([, schema]) => typeOf(schema)],
            ["required", ([name]) => (required.has(name) ? "yes" : "")],
          ],
          properties,
          { empty: "no field" },
        ),
      );
    }),
  );
}
