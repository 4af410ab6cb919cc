// Lifecycle buttons (start, stop, restart, delete) shared by the list and the instance page.
// Buttons are enabled only where the status allows the action; the server still decides, and
// its refusal (409) is shown next to the buttons.
import { api } from "./api.js";
import { confirmDialog, showMessage } from "./ui.js";

const ALLOWED = {
  start: ["stopped", "error"],
  stop: ["running", "starting", "restarting"],
  restart: ["running", "error"],
  delete: ["provisioning", "starting", "running", "stopping", "stopped", "restarting", "error"],
};

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

export function renderStatus(node, status) {
  node.textContent = STATUS_LABEL[status] || status;
  node.className = `status status--${status}`;
}

export function updateActionButtons(container, status) {
  const busy = Boolean(container.dataset.busy);
  for (const button of container.querySelectorAll("[data-action]")) {
    const allowed = (ALLOWED[button.dataset.action] || []).includes(status);
    button.disabled = busy || !allowed;
  }
}

// Run `action` on `instance`; true when the server accepted it. Errors land in `errorSlot`.
export async function runAction(instance, action, { container, button, errorSlot }) {
  if (action === "delete") {
    const confirmed = await confirmDialog({
      title: `Delete ${instance.name}?`,
      body:
        "This destroys the machine and its volume, with every file on it. It cannot be undone.",
      confirmLabel: "Delete instance",
    });
    if (!confirmed) return false;
  }
  showMessage(errorSlot, "");
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
    showMessage(errorSlot, `Could not ${verb} ${instance.name}: ${error.message}`);
    return false;
  } finally {
    delete container.dataset.busy;
    button.textContent = label;
    updateActionButtons(container, instance.status);
  }
}
