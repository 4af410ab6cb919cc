// <subdomain>/: the instance's terminal, full screen. The session cookie here was set by the
// one-time handoff; when it is gone, reloading the page goes through the handoff again.
import { api, setUnauthorizedHandler } from "./api.js";
import { renderStatus } from "./actions.js";
import { TerminalPane } from "./terminal.js";

const POLL_MS = 5000;
const instanceId = document.body.dataset.instanceId;
const terminal = new TerminalPane(document.querySelector("[data-terminal]"), instanceId, {
  onExit: () => refresh(),
});
const statusNode = document.querySelector('[data-field="status"]');
const startLink = document.querySelector("[data-start-link]");
setUnauthorizedHandler(() => location.assign("/"));
let timer = null;

async function refresh() {
  clearTimeout(timer);
  try {
    const instance = await api("GET", `/api/instances/${encodeURIComponent(instanceId)}`);
    renderStatus(statusNode, instance.status);
    startLink.hidden = !["stopped", "error"].includes(instance.status);
    document.title = `${instance.name} · Gentity`;
    terminal.follow(
      instance,
      instance.status === "stopped"
        ? "The instance is stopped."
        : instance.status === "restarting"
          ? "Restarting… the terminal reconnects by itself."
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
  // Called also when the terminal's process ends: one timer, never two polling loops.
  clearTimeout(timer);
  timer = setTimeout(refresh, POLL_MS);
}

refresh();
terminal.focus();
