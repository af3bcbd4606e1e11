// Catalog: products (search, edit price, stock and whether on sale) and the external sync's
// runs, with a button to sync now.
import { query, request } from "../api.js";
import { action, count, errorBox, fill, flash, h, panel, relative, shortId, statusBadge, table, when } from "../dom.js";

export function mount(main) {
  const q = h("input", { name: "q", type: "search", placeholder: "name, author, description" });
  const source = h("input", { name: "source", placeholder: "local, partner…", size: 10 });
  const inactive = h("input", { name: "include_inactive", type: "checkbox", checked: true });
  const products = h("div", { "data-testid": "products" });
  const editor = h("div", { "data-testid": "product-editor" });
  const sync = h("div", { "data-testid": "sync" });
  const message = h("div");
  const search = h("form", { class: "row" }, h("label", {}, "search", q), h("label", {}, "source", source),
    h("label", { class: "inline" }, inactive, "withdrawn too"), h("button", { type: "submit", class: "primary" }, "Search"));
  main.append(message, panel("Products", search, editor, products), panel("External product sync", sync));
  const listProducts = () => showProducts(products, { q: q.value.trim(), source: source.value.trim(), inactive: inactive.checked }, (p) => edit(editor, message, p, listProducts));
  search.addEventListener("submit", (event) => {
    event.preventDefault();
    listProducts();
  });
  const refresh = () => Promise.all([listProducts(), showSync(sync, message)]);
  return { refresh };
}

async function showProducts(node, { q, source, inactive }, onEdit) {
  try {
    const page = await request(`/api/v1/products${query({ q, source, include_inactive: inactive ? "true" : "", limit: 100, sort: "-created_at" })}`);
    fill(
      node,
      h("p", { class: "muted" }, `${count(page.total, "product")}, newest ${page.items.length} shown`),
      table(
        [
          ["name", (p) => [h("strong", {}, p.name), p.author ? h("div", { class: "muted" }, p.author) : null]],
          ["id", (p) => shortId(p.id)],
          ["source", (p) => p.source],
          ["price", (p) => `${p.price} ${p.currency}`],
          ["stock", (p) => String(p.stock)],
          ["status", (p) => (p.active ? statusBadge(p.status) : statusBadge("withdrawn"))],
          ["", (p) => h("button", { type: "button", onclick: () => onEdit(p), "data-product": p.id }, "Edit")],
        ],
        page.items,
        { empty: "no product matches", rowClass: (p) => (p.active && p.stock === 0 ? "warn" : null) },
      ),
    );
  } catch (error) {
    fill(node, errorBox(error));
  }
}

function edit(node, message, product, reload) {
  // Outside the refreshed list: an edit in progress is not wiped by the next refresh.
  const price = h("input", { name: "price", value: product.price, inputmode: "decimal", size: 10 });
  const stock = h("input", { name: "stock", type: "number", min: 0, value: String(product.stock), size: 8 });
  const active = h("input", { name: "active", type: "checkbox", checked: product.active });
  const form = h("form", { class: "row notice" },
    h("strong", {}, product.name), h("label", {}, "price", price), h("label", {}, "stock", stock),
    h("label", { class: "inline" }, active, "on sale"),
    h("button", { type: "submit", class: "primary" }, "Save"),
    h("button", { type: "button", onclick: () => fill(node) }, "Cancel"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const body = { price: price.value.trim(), stock: Number.parseInt(stock.value, 10), active: active.checked };
      const saved = await request(`/api/v1/products/${encodeURIComponent(product.id)}`, { method: "PATCH", body });
      flash(message, `${saved.name}: price ${saved.price}, stock ${saved.stock}, ${saved.active ? "on sale" : "withdrawn"}.`);
      fill(node);
      await reload();
    } catch (error) {
      flash(message, error.message, "bad");
    }
  });
  fill(node, form);
  price.focus();
}

async function showSync(node, message) {
  const status = await request("/api/v1/sync/status");
  fill(
    node,
    h("p", { class: "row" },
      status.next_run_at ? `Next run ${relative(status.next_run_at)}.` : "No run scheduled: the sync is off until an external provider is configured (see Jobs).",
      action("Sync now", async () => {
        const { run_id: runId } = await request("/api/v1/sync/trigger", { method: "POST" });
        flash(message, `Sync run ${runId} queued.`);
        await showSync(node, message);
      }, { kind: "primary", onError: (e) => flash(message, e.message, "bad"), testid: "sync-now" })),
    table(
      [
        ["started", (r) => when(r.started_at)],
        ["finished", (r) => when(r.finished_at)],
        ["status", (r) => statusBadge(r.status)],
        ["created", (r) => String(r.created)],
        ["updated", (r) => String(r.updated)],
        ["unchanged", (r) => String(r.unchanged)],
        ["failed", (r) => String(r.failed)],
        ["error", (r) => (r.error ? h("code", {}, r.error) : "")],
      ],
      status.runs,
      { empty: "no sync run yet", rowClass: (r) => (r.status === "failed" || r.failed > 0 ? "bad" : null) },
    ),
  );
}
