// Lifecycle buttons (start, stop, restart, delete) shared by the list and the instance page.
// Buttons are enabled only where the status allows the action; the server still decides, and
// its refusal (409) is shown next to the buttons.
import { api } from "./api.js";
import { confirmDialog, showDismissible } from "./ui.js";

const ALLOWED = {
  start: ["stopped", "error"],
  stop: ["running", "starting", "restarting"],
  restart: ["running", "error"],
  delete: ["provisioning", "starting", "running", "stopping", "stopped", "restarting", "error"],
};

// Statuses an operation is under way in: pages poll faster while one lasts, so each step shows.
export const IN_PROGRESS = new Set(["provisioning", "starting", "stopping", "restarting", "destroying"]);

// The status an action puts the instance in. A page shows it from the moment the action is
// confirmed, even where the server answers only once the action is done.
export const TRANSITION = { start: "starting", stop: "stopping", restart: "restarting", delete: "destroying" };

const BUSY_LABEL = { start: "Starting…", stop: "Stopping…", restart: "Restarting…", delete: "Deleting…" };

const STATUS_LABEL = {
  provisioning: "Provisioning",
  starting: "Starting",
  running: "Running",
  stopping: "Stopping",
  stopped: "Stopped",
  restarting: "Restarting",
  error: "Error",
  destroying: "Deleting",
  destroyed: "Deleted",
};

export function statusLabel(status) {
  return STATUS_LABEL[status] || status;
}

export function renderStatus(node, status) {
  node.textContent = statusLabel(status);
  node.className = `status status--${status}`;
}

export function updateActionButtons(container, status) {
  const busy = Boolean(container.dataset.busy);
  for (const button of container.querySelectorAll("[data-action]")) {
    const allowed = (ALLOWED[button.dataset.action] || []).includes(status);
    button.disabled = busy || !allowed;
  }
}

// What each action asks before it runs: stopping or restarting ends whatever the agent is doing,
// deleting loses the volume. Start asks nothing.
const CONFIRM = {
  stop: (name) => ({
    title: `Stop ${name}?`,
    body: "The agent and everything running in its terminal end now. Files on the volume are kept; start it again at any time.",
    confirmLabel: "Stop instance",
  }),
  restart: (name) => ({
    title: `Restart ${name}?`,
    body: "The agent and everything running in its terminal end and start afresh. Files on the volume are kept.",
    confirmLabel: "Restart instance",
  }),
  delete: (name) => ({
    title: `Delete ${name}?`,
    body: "This destroys the machine and its volume, with every file on it. It cannot be undone.",
    confirmLabel: "Delete instance",
  }),
};

// Run `action` on `instance`; true when the server accepted it. Errors land in `errorSlot`,
// with a button to dismiss them.
// `onConfirmed` runs once the user has said yes, before the request is sent.
export async function runAction(instance, action, { container, button, errorSlot, onConfirmed }) {
  const ask = CONFIRM[action];
  if (ask && !(await confirmDialog(ask(instance.name)))) return false;
  onConfirmed?.();
  showDismissible(errorSlot, "");
  const label = button.textContent;
  container.dataset.busy = action;
  updateActionButtons(container, instance.status);
  button.textContent = BUSY_LABEL[action];
  try {
    const path = `/api/instances/${encodeURIComponent(instance.id)}`;
    if (action === "delete") await api("DELETE", path);
    else await api("POST", `${path}/action`, { action });
    return true;
  } catch (error) {
    const verb = action === "delete" ? "delete" : action;
    showDismissible(errorSlot, `Could not ${verb} ${instance.name}: ${error.message}`);
    return false;
  } finally {
    delete container.dataset.busy;
    button.textContent = label;
    updateActionButtons(container, instance.status);
  }
}
