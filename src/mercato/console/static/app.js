// The console's shell: sign-in, the admin check, navigation by the URL's fragment
// (#/orders/<id>), and the refresh loop that keeps the shown page current.
import * as api from "./api.js";
import { fill, h, flash } from "./dom.js";
import * as overview from "./pages/overview.js";
import * as orders from "./pages/orders.js";
import * as events from "./pages/events.js";
import * as eventtypes from "./pages/eventtypes.js";
import * as jobs from "./pages/jobs.js";
import * as integration from "./pages/integration.js";
import * as identity from "./pages/identity.js";
import * as catalog from "./pages/catalog.js";

const PAGES = { overview, orders, events, eventtypes, jobs, integration, identity, catalog };
const TITLES = {
  overview: "Overview", orders: "Orders", events: "Events", eventtypes: "Event types", jobs: "Jobs",
  integration: "Integration", identity: "Identity", catalog: "Catalog",
};
// Each page asks again this often while the tab is shown; a hidden tab asks nothing.
const REFRESH_MS = 5000;

const root = document.getElementById("app");
let current = null; // {name, view, arg}
let busy = false;
let again = false; // a refresh asked for while one was running (a page just opened)
let loop = null;
let statusLine = null;
let main = null;
let me = null;
let leaving = false;

api.onSignedOut(() => {
  showSignIn(leaving ? "Signed out." : "Your session ended; sign in again.", leaving ? "ok" : "warn");
  leaving = false;
});

function route() {
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  return { name: PAGES[name] ? name : "overview", arg: rest.map(decodeURIComponent).join("/") || null };
}

function showSignIn(message, kind = "warn") {
  stopLoop();
  current = null;
  main = null;
  const note = h("div");
  const user = h("input", { name: "username", autocomplete: "username", required: true, autofocus: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = h(
    "form",
    { class: "signin", "data-testid": "signin" },
    h("h1", {}, "Mercato console"),
    h("p", { class: "muted" }, "Sign in with an administrator's account."),
    h("label", {}, "Username or e-mail", user),
    h("label", {}, "Password", password),
    h("button", { class: "primary", type: "submit" }, "Sign in"),
    note,
  );
  if (message) flash(note, message, kind);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    flash(note, "Signing in…", "warn");
    try {
      await api.login(user.value.trim(), password.value);
    } catch (error) {
      flash(note, error.status === 401 ? "Wrong username or password." : error.message, "bad");
      return;
    }
    password.value = "";
    await start();
  });
  fill(root, form);
}

async function showRefusal(who) {
  // A person without the admin role: say so plainly, and end the session just opened.
  leaving = true;
  await api.logout();
  stopLoop();
  main = null;
  fill(
    root,
    h(
      "div",
      { class: "signin", "data-testid": "refusal" },
      h("h1", {}, "Not an administrator"),
      h("p", { class: "notice bad", role: "alert" },
        `${who} has no admin role. The console is for Mercato's administrators; ask one to grant you the role.`),
      h("button", { type: "button", onclick: () => showSignIn() }, "Sign in as someone else"),
    ),
  );
}

async function start() {
  try {
    me = await api.request("/api/v1/auth/me");
  } catch (error) {
    if (!api.signedIn()) return; // onSignedOut has shown the form
    showSignIn(error.message, "bad");
    return;
  }
  if (!(me.roles || []).includes("admin")) {
    await showRefusal(me.username || me.email || me.sub);
    return;
  }
  showShell();
}

function showShell() {
  const nav = h("nav", {}, Object.entries(TITLES).map(([name, title]) => h("a", { href: `#/${name}`, "data-page": name }, title)));
  const signOut = h("button", { type: "button", "data-testid": "signout" }, "Sign out");
  signOut.addEventListener("click", async () => {
    leaving = true;
    await api.logout();
  });
  statusLine = h("div", { class: "status-line", "data-testid": "status-line" }, "");
  main = h("main", { id: "main" });
  fill(
    root,
    h("header", { class: "top" }, h("span", { class: "brand" }, "Mercato"), nav,
      h("span", { class: "who" }, me.username || me.email || ""), signOut),
    statusLine,
    main,
  );
  show();
  startLoop();
}

function show() {
  if (!main) return;
  const { name, arg } = route();
  for (const link of root.querySelectorAll("header nav a")) {
    link.classList.toggle("active", link.dataset.page === name);
  }
  document.title = `${TITLES[name]} · Mercato console`;
  if (current && current.name === name && current.view.open && current.arg !== arg) {
    current.arg = arg;
    current.view.open(arg); // the same page, another item (#/orders/<id>)
  } else {
    fill(main);
    current = { name, arg, view: PAGES[name].mount(main, { arg, navigate }) };
    main.dataset.page = name;
  }
  tick(true);
}

function navigate(hash) {
  if (location.hash === hash) show();
  else location.hash = hash;
}

async function tick(force = false) {
  if (!current) return;
  if (busy) {
    again = again || force;
    return;
  }
  if (document.hidden && !force) {
    statusLine.textContent = "Paused while the tab is hidden.";
    return;
  }
  busy = true;
  const view = current.view;
  try {
    await view.refresh();
    statusLine.className = "status-line";
    statusLine.textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every ${REFRESH_MS / 1000} s while shown`;
  } catch (error) {
    if (!api.signedIn()) return;
    statusLine.className = "status-line error";
    statusLine.textContent = `Could not refresh: ${error.message}`;
  } finally {
    busy = false;
    if (again) {
      again = false;
      tick(true);
    }
  }
}

function startLoop() {
  stopLoop();
  loop = setInterval(() => tick(), REFRESH_MS);
}

function stopLoop() {
  clearInterval(loop);
  loop = null;
}

window.addEventListener("hashchange", show);
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) tick(true); // back in view: current at once, not in 5 s
});

if (api.signedIn()) start();
else showSignIn();
