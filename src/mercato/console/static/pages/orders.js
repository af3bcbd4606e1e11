// Orders: a searchable list (status, user, age; "pending longer than N s" finds stuck sagas) and
// one order's saga timeline, every event that moved it.
import { ApiError, query, request } from "../api.js";
import { count, duration, errorBox, fill, h, notAvailable, panel, secondsSince, shortId, statusBadge, table, when } from "../dom.js";

export function mount(main, { arg, navigate }) {
  const status = h("select", { name: "status" }, ["", "pending", "completed", "failed"].map((s) => h("option", { value: s }, s || "any")));
  const user = h("input", { name: "user_id", placeholder: "user id, username or e-mail", size: 36 });
  const older = h("input", { name: "pending_over", type: "number", min: 0, placeholder: "seconds", size: 8 });
  const orderId = h("input", { name: "order_id", placeholder: "order id", size: 36 });
  const list = h("div", { "data-testid": "orders-list" });
  const detail = h("div", { "data-testid": "order-detail" });
  const search = h(
    "form",
    { class: "row", "data-testid": "orders-search" },
    h("label", {}, "status", status),
    h("label", {}, "user", user),
    h("label", {}, "pending longer than (s)", older),
    h("button", { type: "submit", class: "primary" }, "Search"),
    h("label", {}, "open an order", orderId),
    h("button", { type: "button", onclick: () => orderId.value.trim() && navigate(`#/orders/${encodeURIComponent(orderId.value.trim())}`) }, "Open"),
  );
  const listPanel = panel("Orders", search, list);
  main.append(h("div", { class: "split" }, listPanel, panel("Order", detail)));
  // #/orders/<id> opens an order; #/orders/pending-over/<seconds> lists the stuck ones.
  const choose = (target) => {
    const stuck = /^pending-over\/(\d+)$/.exec(target || "");
    if (stuck) older.value = stuck[1];
    return stuck ? null : target;
  };
  let current = choose(arg);
  const refreshList = () => showList(list, { status: status.value, user: user.value.trim(), older: older.value });
  search.addEventListener("submit", (event) => {
    event.preventDefault();
    refreshList().catch((error) => fill(list, errorBox(error)));
  });
  const refreshDetail = () => (current ? showOrder(detail, current) : fill(detail, h("p", { class: "muted" }, "Pick an order to see its saga.")));
  return {
    open(target) {
      current = choose(target);
      return Promise.all([refreshList(), refreshDetail()]);
    },
    async refresh() {
      await Promise.all([refreshList(), refreshDetail()]);
    },
  };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The id of the account `who` names (an id, a username or an e-mail), or null. */
async function accountId(who) {
  if (!who || UUID.test(who)) return who;
  const wanted = who.toLowerCase();
  const accounts = await request("/api/v1/admin/accounts?limit=500");
  const found = accounts.items.find((a) => a.username.toLowerCase() === wanted || a.email.toLowerCase() === wanted);
  return found ? found.id : null;
}

async function showList(node, { status, user, older }) {
  const stuck = older !== "" && Number(older) >= 0;
  let page;
  try {
    const userId = await accountId(user);
    if (userId === null) {
      fill(node, h("p", { class: "notice" }, `No account is named ${user}.`));
      return;
    }
    // Newest first; stuck sagas are the pending ones older than the bound (of the newest 500).
    const params = { status: stuck ? "pending" : status, user_id: userId, limit: stuck ? 500 : 100 };
    page = await request(`/api/v1/admin/orders${query(params)}`);
  } catch (error) {
    fill(node, errorBox(error));
    return;
  }
  const items = stuck ? page.items.filter((o) => secondsSince(o.created_at) > Number(older)) : page.items;
  fill(
    node,
    h("p", { class: "muted" }, stuck ? `${items.length} pending longer than ${older} s` : `${count(page.total, "order")}, newest ${page.items.length} shown`),
    table(
      [
        ["order", (o) => h("a", { href: `#/orders/${o.id}`, "data-order": o.id }, shortId(o.id))],
        ["status", (o) => statusBadge(o.status)],
        ["user", (o) => shortId(o.user_id)],
        ["total", (o) => o.total],
        ["payment", (o) => o.payment_status || String(o.is_payment_processed)],
        ["stock", (o) => o.inventory_status || String(o.is_inventory_processed)],
        ["age", (o) => duration(secondsSince(o.created_at))],
        ["why failed", (o) => o.fail_reason || ""],
      ],
      items,
      {
        empty: "no order matches",
        rowClass: (o) => (o.status === "failed" ? "bad" : o.status === "pending" && secondsSince(o.created_at) > 30 ? "warn" : null),
      },
    ),
  );
}

async function showOrder(node, id) {
  let order;
  try {
    order = await request(`/api/v1/orders/${encodeURIComponent(id)}`);
  } catch (error) {
    fill(node, errorBox(error));
    return;
  }
  let timeline;
  try {
    const answer = await request(`/api/v1/orders/${encodeURIComponent(id)}/timeline`);
    timeline = table(
      [
        ["event", (e) => h("strong", {}, e.type)],
        ["time", (e) => when(e.occurred_at)],
        ["event id", (e) => shortId(e.event_id)],
        ["correlation id", (e) => (e.correlation_id
          ? h("a", { href: `#/events/${e.source || "orders"}/${encodeURIComponent(e.correlation_id)}`, title: "the events of this correlation" }, h("code", {}, e.correlation_id))
          : "—")],
        ["from", (e) => e.source || ""],
      ],
      answer.events || answer.items || [],
      { empty: "no event yet", testid: "timeline", rowClass: (e) => (/rejected|failed/.test(e.type) ? "bad" : null) },
    );
  } catch (error) {
    timeline = error instanceof ApiError && error.missing ? notAvailable("The saga timeline", "GET /api/v1/orders/{id}/timeline") : errorBox(error);
  }
  fill(
    node,
    h("p", {}, h("code", { "data-testid": "order-id" }, order.id), " ", h("span", { "data-testid": "order-status" }, statusBadge(order.status))),
    h("p", { class: "muted" }, `user ${order.user_id} · total ${order.total} · placed `, when(order.created_at)),
    order.fail_reason ? h("p", { class: "notice bad" }, `failed: ${order.fail_reason}`) : null,
    table(
      [
        ["product", (l) => l.name],
        ["quantity", (l) => String(l.quantity)],
        ["unit price", (l) => l.unit_price],
        ["line total", (l) => l.line_total],
      ],
      order.items,
    ),
    h("h3", {}, "Saga timeline"),
    timeline,
  );
}
