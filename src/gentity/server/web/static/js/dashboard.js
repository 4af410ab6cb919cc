// /dashboard: the user's instances, refreshed every few seconds. Each row opens its instance;
// lifecycle actions sit in a menu. Search and sort work on the rows already loaded.
import "./common.js";
import { api } from "./api.js";
import { IN_PROGRESS, TRANSITION, renderStatus, runAction, updateActionButtons } from "./actions.js";
import { loadAgents, showLabels } from "./catalog.js";
import { renderHealth, resourcesText } from "./health.js";
import { formatDate, relativeTime, showMessage } from "./ui.js";

const POLL_MS = 3000;
const BUSY_POLL_MS = 1000;
const list = document.getElementById("instances");
const rowTemplate = document.getElementById("instance-row");
const empty = document.querySelector("[data-empty]");
const listError = document.querySelector("[data-list-error]");
const newButton = document.querySelector("[data-new-instance]");
const tools = document.querySelector("[data-list-tools]");
const search = document.getElementById("search");
const sort = document.getElementById("sort");
const noMatch = document.querySelector("[data-no-match]");
const rows = new Map(); // id -> {node, instance}
let timer = null;
let agents = [];
let latest = [];

function field(node, name) {
  return node.querySelector(`[data-field="${name}"]`);
}

function closeMenus(except) {
  for (const menu of list.querySelectorAll("details[data-menu][open]")) {
    if (menu !== except) menu.open = false;
  }
}

function createRow(instance) {
  const node = rowTemplate.content.firstElementChild.cloneNode(true);
  node.dataset.instanceId = instance.id;
  const entry = { node, instance, transition: null };
  const menu = node.querySelector("[data-menu]");
  menu.addEventListener("toggle", () => menu.open && closeMenus(menu));
  for (const button of node.querySelectorAll("[data-action]")) {
    button.addEventListener("click", async () => {
      menu.open = false;
      // The menu's button is where focus returns after the confirmation dialog.
      menu.querySelector("summary").focus();
      const ok = await runAction(entry.instance, button.dataset.action, {
        container: node,
        button,
        errorSlot: field(node, "actionError"),
        // The badge says what is under way (Starting…) until the server answers.
        onConfirmed: () => {
          entry.transition = TRANSITION[button.dataset.action];
          renderStatus(field(node, "status"), entry.transition);
        },
      });
      entry.transition = null;
      if (ok) refresh();
      else renderStatus(field(node, "status"), entry.instance.status);
    });
  }
  // A click anywhere else on the row opens the instance, as its name does.
  node.addEventListener("click", (event) => {
    if (event.target.closest("a, button, summary, details, [role=alert]")) return;
    location.assign(field(node, "link").href);
  });
  return entry;
}

// Update a row in place, so polling never steals focus from a button or re-reads a list.
function fillRow(entry, instance) {
  const { node } = entry;
  entry.instance = instance;
  const href = `/dashboard/instances/${encodeURIComponent(instance.id)}`;
  const link = field(node, "link");
  link.textContent = instance.name;
  link.href = href;
  const open = field(node, "open");
  open.href = href;
  open.setAttribute("aria-label", `Open ${instance.name}`);
  field(node, "menuButton").setAttribute("aria-label", `Actions for ${instance.name}`);
  showLabels(agents, instance, field(node, "agent"), field(node, "model"));
  const subdomain = field(node, "subdomain");
  subdomain.textContent = instance.subdomain;
  subdomain.href = `/dashboard/open/${encodeURIComponent(instance.subdomain)}`;
  subdomain.title = "Open the terminal full screen";
  const created = field(node, "created");
  created.textContent = relativeTime(instance.createdAt);
  created.setAttribute("datetime", instance.createdAt);
  created.title = formatDate(instance.createdAt);
  showMessage(field(node, "errorMessage"), instance.errorMessage || "");
  renderStatus(field(node, "status"), entry.transition || instance.status);
  renderHealth(field(node, "health"), instance);
  const size = [resourcesText(agents, instance), instance.region].filter(Boolean).join(" · ");
  showMessage(field(node, "resources"), size);
  node.dataset.status = instance.status;
  updateActionButtons(node, instance.status);
}

const ORDER = {
  created: (a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : 0),
  name: (a, b) => a.name.localeCompare(b.name),
  status: (a, b) => a.status.localeCompare(b.status) || a.name.localeCompare(b.name),
};

// Every word of the search appears in the name, subdomain, agent or model (as shown).
function matches(node, words) {
  const shown = ["link", "subdomain", "agent", "model"].map((name) => field(node, name).textContent);
  const text = shown.join(" ").toLowerCase();
  return words.every((word) => text.includes(word));
}

function render(instances) {
  latest = instances;
  list.querySelector("[data-loading]")?.remove();
  list.removeAttribute("aria-busy");
  const seen = new Set();
  const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
  let previous = null;
  let shown = 0;
  for (const instance of [...instances].sort(ORDER[sort.value] || ORDER.created)) {
    seen.add(instance.id);
    let entry = rows.get(instance.id);
    if (!entry) {
      entry = createRow(instance);
      rows.set(instance.id, entry);
    }
    fillRow(entry, instance);
    entry.node.hidden = !matches(entry.node, words);
    if (!entry.node.hidden) shown += 1;
    // Keep the chosen order without re-inserting rows that are in place.
    const expected = previous ? previous.nextElementSibling : list.firstElementChild;
    if (expected !== entry.node) {
      if (previous) previous.after(entry.node);
      else list.prepend(entry.node);
    }
    previous = entry.node;
  }
  for (const [id, entry] of rows) {
    if (!seen.has(id)) {
      entry.node.remove();
      rows.delete(id);
    }
  }
  empty.hidden = instances.length > 0;
  tools.hidden = instances.length === 0;
  noMatch.hidden = instances.length === 0 || shown > 0;
  // An empty list has one call to action: the empty state's own button.
  newButton.hidden = instances.length === 0;
}

async function refresh() {
  clearTimeout(timer);
  try {
    const data = await api("GET", "/api/instances");
    render(data.instances || []);
    showMessage(listError, "");
  } catch (error) {
    showMessage(listError, `Could not load your instances: ${error.message}`);
  } finally {
    clearTimeout(timer);
    const busy = latest.some((instance) => IN_PROGRESS.has(instance.status));
    if (!document.hidden) timer = setTimeout(refresh, busy ? BUSY_POLL_MS : POLL_MS);
  }
}

search.addEventListener("input", () => render(latest));
sort.addEventListener("change", () => render(latest));
// A click outside a menu, or Escape, closes it.
document.addEventListener("click", (event) => {
  if (!event.target.closest("details[data-menu]")) closeMenus(null);
});
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  const open = list.querySelector("details[data-menu][open]");
  if (!open) return;
  open.open = false;
  open.querySelector("summary").focus();
});

// A hidden tab does not poll; it catches up the moment it is shown again.
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) refresh();
  else clearTimeout(timer);
});

loadAgents()
  .then((found) => {
    agents = found;
  })
  .finally(refresh);
