// /dashboard/instances/{id}: details and status (polled), lifecycle buttons, ports, terminal
// and logs.
import "./common.js";
import { api } from "./api.js";
import { IN_PROGRESS, TRANSITION, renderStatus, runAction, updateActionButtons } from "./actions.js";
import { renderHealth, resourcesText } from "./health.js";
import { EventsPane } from "./events.js";
import { LogsPane } from "./logs.js";
import { FilesPane } from "./files.js";
import { PortsPane } from "./ports.js";
import { TerminalPane } from "./terminal.js";
import { loadAgents, showLabels } from "./catalog.js";
import { formatDate, setTime, showMessage } from "./ui.js";

const POLL_MS = 3000;
const BUSY_POLL_MS = 1000;
const instanceId = document.body.dataset.instanceId;
const path = `/api/instances/${encodeURIComponent(instanceId)}`;
const actions = document.querySelector(".page-head__actions");
const actionError = document.querySelector("[data-action-error]");
const refreshError = document.querySelector("[data-refresh-error]");
const terminal = new TerminalPane(document.querySelector("[data-terminal]"), instanceId, {
  onExit: () => refresh(),
});
const logs = new LogsPane(document.querySelector("[aria-labelledby=logs-heading]"), instanceId);
const events = new EventsPane(document.querySelector("[aria-labelledby=events-heading]"), instanceId);
const files = new FilesPane(document.querySelector("[data-files]"), instanceId);
const ports = new PortsPane(
  document.querySelector("[data-ports]"),
  instanceId,
  document.body.dataset.subdomain,
);
let instance = null;
let timer = null;
let agents = [];

function fields(name) {
  return document.querySelectorAll(`[data-field="${name}"]`);
}

function render(current) {
  instance = current;
  for (const node of fields("name")) node.textContent = current.name;
  document.title = `${current.name} · Gentity`;
  for (const node of fields("status")) renderStatus(node, transition || current.status);
  showLabels(agents, current, fields("agent")[0], fields("model")[0]);
  for (const node of fields("created")) setTime(node, current.createdAt);
  for (const node of fields("errorMessage")) showMessage(node, current.errorMessage || "");
  const health = renderHealth(fields("health")[0], current);
  // The list keeps the detail in a tooltip; here there is room to show it.
  fields("healthDetail")[0].textContent = health ? health.detail : "Known while the instance runs.";
  fields("resources")[0].textContent = resourcesText(agents, current) || "—";
  fields("region")[0].textContent = current.region || "Default";
  renderAutoStop(fields("autoStop")[0], current);
  updateActionButtons(actions, current.status);
  terminal.follow(current, statusReason(current.status));
  files.follow(current);
  ports.follow(current);
}

// When the server will stop the instance if nobody uses it: autoStopAt moves on with activity.
function renderAutoStop(node, current) {
  const minutes = current.autoStopMinutes || 0;
  node.title = "";
  if (minutes <= 0) {
    node.textContent = "Never";
    return;
  }
  const after = `after ${minutes} min without activity`;
  const at = current.autoStopAt ? new Date(current.autoStopAt) : null;
  if (!at || Number.isNaN(at.getTime())) {
    node.textContent = `While running, ${after}`;
    return;
  }
  let text = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
  if (at.toDateString() !== new Date().toDateString()) {
    text = `${at.toLocaleDateString([], { month: "short", day: "numeric" })} ${text}`;
  }
  node.textContent = `Stops when idle at ${text} (${after})`;
  node.title = formatDate(current.autoStopAt);
}

function statusReason(status) {
  if (status === "stopped") return "The instance is stopped. Start it to use the terminal.";
  if (status === "error") return "The instance has a problem (see above). Restart it to try again.";
  if (status === "restarting") return "Restarting… the terminal reconnects by itself.";
  return `The instance is ${status}. The terminal connects when it is running.`;
}

let gone = false;
// While an action from this page is under way its badge says so (Stopping, Restarting…).
let transition = null;

async function refresh() {
  clearTimeout(timer);
  try {
    render(await api("GET", path));
    showMessage(refreshError, "");
  } catch (error) {
    if (error.status === 404) {
      gone = true;
      // Deleted elsewhere (another tab, the CLI): the badge must not go on saying Running.
      for (const node of fields("status")) renderStatus(node, "destroyed");
      terminal.setAvailable(false, "This instance no longer exists.");
      showMessage(refreshError, "This instance no longer exists.");
      updateActionButtons(actions, "destroyed");
      logs.stop();
      events.stop();
      return;
    }
    showMessage(refreshError, `Could not refresh the instance: ${error.message}`);
  } finally {
    // Keep polling through passing errors (a server restart, a network blip), not after 404.
    clearTimeout(timer);
    const busy = transition || (instance && IN_PROGRESS.has(instance.status));
    if (!gone && !document.hidden) timer = setTimeout(refresh, busy ? BUSY_POLL_MS : POLL_MS);
  }
}

for (const button of actions.querySelectorAll("[data-action]")) {
  button.addEventListener("click", async () => {
    if (!instance) return;
    const action = button.dataset.action;
    // A refusal stays next to the buttons until the next action; polling does not clear it.
    const ok = await runAction(instance, action, {
      container: actions,
      button,
      errorSlot: actionError,
      onConfirmed: () => {
        transition = TRANSITION[action] || null;
        if (transition) for (const node of fields("status")) renderStatus(node, transition);
        if (action === "restart") terminal.expectRestart();
      },
    });
    transition = null;
    if (!ok) {
      terminal.cancelRestart();
      if (instance) render(instance);
      return;
    }
    if (action === "delete") {
      location.assign("/dashboard");
      return;
    }
    refresh();
  });
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) refresh();
  else clearTimeout(timer);
});

loadAgents()
  .then((found) => {
    agents = found;
  })
  .finally(refresh);
logs.start();
events.start();
