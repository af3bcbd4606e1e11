// Building the page from data: every text goes in as a text node, never as HTML, so nothing an
// API answer holds (a product name, an error message) can become markup or script.

/** An element: `props` sets attributes (`class`, `data-*`, ...), `on*` functions become event
 * listeners; children are nodes, strings or arrays of them (null and false are skipped). */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "value" || name === "checked") {
      node[name] = value;
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace what `node` holds. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** A panel with a heading. */
export function panel(title, ...children) {
  return h("section", { class: "panel" }, h("h2", {}, title), ...children);
}

/** A table: `columns` are `[title, row => cell]`; `rowClass(row)` may mark a row bad or warn. */
export function table(columns, rows, { empty = "nothing here", rowClass, testid } = {}) {
  if (!rows.length) return h("p", { class: "muted", "data-testid": testid }, empty);
  return h(
    "table",
    { "data-testid": testid },
    h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", {}, title)))),
    h(
      "tbody",
      {},
      rows.map((row) =>
        h("tr", { class: rowClass ? rowClass(row) : null }, columns.map(([, cell]) => h("td", {}, cell(row)))),
      ),
    ),
  );
}

/** A coloured label: kind is ok, warn, bad or muted. */
export function badge(text, kind = "muted") {
  return h("span", { class: `badge ${kind}` }, text);
}

/** A status word as a badge of the right colour. */
export function statusBadge(status) {
  const kinds = {
    ok: "ok", active: "ok", completed: "ok", succeeded: "ok", success: "ok", sent: "ok", available: "ok",
    pending: "warn", running: "warn", queued: "warn", requested: "warn", skipped: "muted",
    disabled: "muted", unavailable: "bad", failed: "bad", error: "bad", rejected: "bad",
  };
  const word = String(status ?? "—");
  return badge(word, kinds[word.split(":")[0]] || "muted");
}

/** "12 s", "4 min 3 s", "2 h 5 min", "3 d 4 h". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** Seconds from an ISO time to now (negative: in the future). */
export function secondsSince(iso) {
  return iso ? (Date.now() - Date.parse(iso)) / 1000 : null;
}

/** "3 min 2 s ago" / "in 40 s". */
export function relative(iso) {
  if (!iso) return "—";
  const s = secondsSince(iso);
  return s >= 0 ? `${duration(s)} ago` : `in ${duration(-s)}`;
}

/** An ISO time as local date and time, with the relative time beside it. */
export function when(iso) {
  if (!iso) return "—";
  return h("span", { title: iso }, `${new Date(iso).toLocaleString()} `, h("span", { class: "muted" }, `(${relative(iso)})`));
}

/** A long id, shortened, whole on hover. */
export function shortId(id) {
  return id ? h("code", { title: id }, String(id).slice(0, 8)) : "—";
}

/** A box saying an endpoint is not deployed on this server (the page keeps working). */
export function notAvailable(what, path) {
  return h("p", { class: "notice", "data-testid": "not-available" }, `${what} is not available on this server (it has no ${path}).`);
}

/** A box with an error's message. */
export function errorBox(error) {
  return h("p", { class: "notice bad", role: "alert" }, error instanceof Error ? error.message : String(error));
}

/** A message that replaces itself: call with (text, kind). */
export function flash(node, text, kind = "ok") {
  fill(node, text ? h("p", { class: `notice ${kind}`, role: "status" }, text) : null);
}

/** A button that runs `action` once at a time (disabled meanwhile); errors go to `onError`. */
export function action(label, run, { kind, onError, testid, title, disabled } = {}) {
  const button = h("button", { class: kind, "data-testid": testid, title, type: "button", disabled }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await run();
    } catch (error) {
      if (onError) onError(error);
      else window.alert(error.message);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/** "1 order", "3 orders". */
export function count(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}
