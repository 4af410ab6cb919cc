// The ports panel: what the instance listens on (GET /api/instances/{id}/ports), each with a
// link to its preview and a "Public" switch (PUT …/ports/{port}). Links go through the main
// host's hand-off (/dashboard/preview/…), which signs the owner in on the preview host.
import { api } from "./api.js";
import { el, showMessage } from "./ui.js";

const POLL_MS = 5000;

export class PortsPane {
  constructor(root, instanceId, subdomain) {
    this.list = root.querySelector("[data-ports-list]");
    this.empty = root.querySelector("[data-ports-empty]");
    this.error = root.querySelector("[data-ports-error]");
    this.base = `/api/instances/${encodeURIComponent(instanceId)}/ports`;
    this.subdomain = subdomain;
    this.loadedAt = 0;
    this.loading = false;
    this.shown = "";
  }

  // Called with every refresh of the instance: reload while it runs, at most every POLL_MS.
  follow(instance) {
    if (instance.status !== "running") {
      this.render([], "Ports are listed while the instance runs.");
      return;
    }
    if (this.loading || Date.now() - this.loadedAt < POLL_MS) return;
    this.load();
  }

  async load() {
    this.loading = true;
    try {
      const data = await api("GET", this.base);
      this.render(data.ports || [], "Nothing listens on a port yet. Start a server in the terminal.");
      showMessage(this.error, "");
    } catch (error) {
      if (error.status !== 409) showMessage(this.error, `Could not list the ports: ${error.message}`);
    } finally {
      this.loading = false;
      this.loadedAt = Date.now();
    }
  }

  render(ports, emptyText) {
    // Rebuilt only when something changed, so a switch being clicked is not replaced under it.
    const key = JSON.stringify(ports);
    if (key === this.shown && this.list.childElementCount === ports.length) return;
    this.shown = key;
    this.list.replaceChildren(...ports.map((port) => this.row(port)));
    this.empty.textContent = emptyText;
    this.empty.hidden = ports.length > 0;
  }

  row(port) {
    const href = `/dashboard/preview/${encodeURIComponent(this.subdomain)}/${port.port}`;
    const link = port.url
      ? el("a", { href, target: "_blank", rel: "noopener", text: port.url })
      : el("span", { className: "muted", text: "No preview host: the server is reached by an IP address" });
    const box = el("input", { type: "checkbox", "data-port-public": port.port });
    box.checked = port.public;
    box.addEventListener("change", () => this.setPublic(port.port, box));
    return el(
      "li",
      { className: "ports__row", "data-port": port.port },
      el("span", { className: "ports__number", text: String(port.port) }),
      link,
      el("label", { className: "toggle" }, box, " Public"),
    );
  }

  async setPublic(port, box) {
    box.disabled = true;
    try {
      await api("PUT", `${this.base}/${port}`, { public: box.checked });
      showMessage(this.error, "");
      this.loadedAt = 0;
      await this.load();
    } catch (error) {
      box.checked = !box.checked;
      showMessage(this.error, `Could not change port ${port}: ${error.message}`);
    } finally {
      box.disabled = false;
    }
  }
}
