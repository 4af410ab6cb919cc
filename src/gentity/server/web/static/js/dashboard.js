// /dashboard: the user's instances, refreshed every few seconds, with lifecycle buttons.
import "./common.js";
import { api } from "./api.js";
import { renderStatus, runAction, updateActionButtons } from "./actions.js";
import { loadAgents, showLabels } from "./catalog.js";
import { setTime, showMessage } from "./ui.js";

const POLL_MS = 3000;
const list = document.getElementById("instances");
const rowTemplate = document.getElementById("instance-row");
const empty = document.querySelector("[data-empty]");
const listError = document.querySelector("[data-list-error]");
const newButton = document.querySelector("[data-new-instance]");
const rows = new Map(); // id -> {node, instance}
let timer = null;
let agents = [];

function field(node, name) {
  return node.querySelector(`[data-field="${name}"]`);
}

function createRow(instance) {
  const node = rowTemplate.content.firstElementChild.cloneNode(true);
  node.dataset.instanceId = instance.id;
  const entry = { node, instance };
  for (const button of node.querySelectorAll("[data-action]")) {
    button.addEventListener("click", async () => {
      const ok = await runAction(entry.instance, button.dataset.action, {
        container: node,
        button,
        errorSlot: field(node, "actionError"),
      });
      if (ok) refresh();
    });
  }
  return entry;
}

// Update a row in place, so polling never steals focus from a button or re-reads a list.
function fillRow(entry, instance) {
  const { node } = entry;
  entry.instance = instance;
  const link = field(node, "link");
  link.textContent = instance.name;
  link.href = `/dashboard/instances/${encodeURIComponent(instance.id)}`;
  showLabels(agents, instance, field(node, "agent"), field(node, "model"));
  field(node, "subdomain").textContent = instance.subdomain;
  setTime(field(node, "created"), instance.createdAt);
  showMessage(field(node, "errorMessage"), instance.errorMessage || "");
  renderStatus(field(node, "status"), instance.status);
  node.dataset.status = instance.status;
  updateActionButtons(node, instance.status);
}

function render(instances) {
  list.querySelector("[data-loading]")?.remove();
  list.removeAttribute("aria-busy");
  const seen = new Set();
  let previous = null;
  for (const instance of instances) {
    seen.add(instance.id);
    let entry = rows.get(instance.id);
    if (!entry) {
      entry = createRow(instance);
      rows.set(instance.id, entry);
    }
    fillRow(entry, instance);
    // Keep the server's order (newest first) without re-inserting rows that are in place.
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
    if (!document.hidden) timer = setTimeout(refresh, POLL_MS);
  }
}

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
