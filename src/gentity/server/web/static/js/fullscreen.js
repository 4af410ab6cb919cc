// <subdomain>/: the instance's terminal, full screen. The session cookie here was set by the
// one-time handoff; when it is gone, reloading the page goes through the handoff again.
import { api, setUnauthorizedHandler } from "./api.js";
import { renderStatus } from "./actions.js";
import { TerminalPane } from "./terminal.js";

const POLL_MS = 5000;
const instanceId = document.body.dataset.instanceId;
const terminal = new TerminalPane(document.querySelector("[data-terminal]"), instanceId);
const statusNode = document.querySelector('[data-field="status"]');
const startLink = document.querySelector("[data-start-link]");
setUnauthorizedHandler(() => location.assign("/"));

async function refresh() {
  try {
    const instance = await api("GET", `/api/instances/${encodeURIComponent(instanceId)}`);
    renderStatus(statusNode, instance.status);
    startLink.hidden = !["stopped", "error"].includes(instance.status);
    document.title = `${instance.name} · Gentity`;
    terminal.setAvailable(
      instance.status === "running",
      instance.status === "stopped"
        ? "The instance is stopped."
        : `The instance is ${instance.status}.`,
    );
  } catch (error) {
    if (error.status === 404) {
      terminal.setAvailable(false, "This instance no longer exists.");
      renderStatus(statusNode, "destroyed");
      startLink.hidden = true;
      return;
    }
    // A failed status check (a network blip) leaves a working terminal alone.
  }
  setTimeout(refresh, POLL_MS);
}

refresh();
terminal.focus();
