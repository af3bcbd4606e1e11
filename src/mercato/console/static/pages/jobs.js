// Jobs: each job's schedule, next run and history (counts and errors), run now; the export
// files, downloaded with the admin's token (fetch and a blob: a plain link carries no token).
import { request } from "../api.js";
import { action, count, errorBox, fill, flash, h, panel, relative, statusBadge, table, when } from "../dom.js";

export function mount(main, { arg }) {
  const jobs = h("div", { "data-testid": "jobs" });
  const history = h("div", { "data-testid": "job-history" });
  const exports = h("div", { "data-testid": "exports" });
  const message = h("div");
  const historyPanel = panel("History", history);
  main.append(panel("Jobs", message, jobs), historyPanel, panel("Export files", exports));
  let selected = arg;
  const refresh = async () => {
    await Promise.all([
      showJobs(jobs, message, (name) => {
        selected = name;
        return showHistory(history, selected);
      }),
      selected ? showHistory(history, selected) : fill(history, h("p", { class: "muted" }, "Pick a job to see its runs.")),
      showExports(exports, message),
    ]);
  };
  return { refresh, open: (name) => { selected = name; return refresh(); } };
}

async function showJobs(node, message, pick) {
  const page = await request("/api/v1/jobs");
  const onError = (error) => flash(message, error.message, "bad");
  fill(
    node,
    table(
      [
        ["job", (j) => [h("strong", {}, j.name), h("div", { class: "muted" }, j.description)]],
        ["schedule", (j) => (j.enabled ? j.schedule : h("span", { class: "muted" }, `disabled: ${j.disabled_reason || ""}`))],
        ["next run", (j) => relative(j.next_run_at)],
        ["last run", (j) => (j.last_run ? [statusBadge(j.last_run.status), " ", relative(j.last_run.finished_at || j.last_run.requested_at)] : "never")],
        ["", (j) => [
          action("Run now", async () => {
            const { run_id: runId } = await request(`/api/v1/jobs/${encodeURIComponent(j.name)}/run`, { method: "POST" });
            flash(message, `${j.name}: run ${runId} queued.`);
            await pick(j.name);
          }, { onError, testid: `run-${j.name}`, kind: "primary", disabled: !j.enabled, title: j.disabled_reason }),
          " ",
          action("History", () => pick(j.name), { onError, testid: `history-${j.name}` }),
        ]],
      ],
      page.items,
      { rowClass: (j) => (j.last_run && j.last_run.status === "failed" ? "bad" : null) },
    ),
  );
}

async function showHistory(node, name) {
  try {
    const page = await request(`/api/v1/jobs/${encodeURIComponent(name)}/runs?limit=20`);
    fill(
      node,
      h("p", { class: "muted" }, `${name}: ${count(page.total, "run")}, newest first`),
      table(
        [
          ["requested", (r) => when(r.requested_at)],
          ["trigger", (r) => r.trigger],
          ["status", (r) => statusBadge(r.status)],
          ["took", (r) => (r.started_at && r.finished_at ? `${((Date.parse(r.finished_at) - Date.parse(r.started_at)) / 1000).toFixed(1)} s` : "—")],
          ["counts", (r) => Object.entries(r.counts || {}).map(([k, v]) => `${k} ${v}`).join(", ") || "—"],
          ["output / error", (r) => (r.error ? h("code", {}, r.error) : r.output || "")],
        ],
        page.items,
        { empty: "never run", rowClass: (r) => (r.status === "failed" ? "bad" : null) },
      ),
    );
  } catch (error) {
    fill(node, errorBox(error));
  }
}

async function showExports(node, message) {
  const page = await request("/api/v1/exports?limit=50");
  fill(
    node,
    table(
      [
        ["file", (f) => h("code", {}, f.file_name)],
        ["rows", (f) => String(f.rows)],
        ["size", (f) => `${(f.size_bytes / 1024).toFixed(1)} KiB`],
        ["written", (f) => when(f.created_at)],
        ["", (f) => action("Download", () => download(f), { onError: (e) => flash(message, e.message, "bad"), testid: "download" })],
      ],
      page.items,
      { empty: "no export yet: run export-products", testid: "exports-table" },
    ),
  );
}

async function download(file) {
  // Built here, never taken from the answer: the bearer token goes to this API's path only.
  const answer = await request(`/api/v1/exports/${encodeURIComponent(file.file_name)}`, { raw: true });
  const url = URL.createObjectURL(await answer.blob());
  const link = h("a", { href: url, download: file.file_name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
