// The files panel: the working directory of a running instance from GET
// /api/instances/{id}/files (directories open in place, files are download links), and an
// upload into the directory shown (PUT with the file as the body, streamed by the browser).
// Paths are built from the names the server listed, relative to the working directory; the
// panel never sends "..": "Up one level" drops the last name.
import { ApiError } from "./api.js";
import { el, formatDate, showMessage } from "./ui.js";

function sizeText(entry) {
  if (entry.type !== "file") return "—";
  const units = ["bytes", "KB", "MB", "GB"];
  let size = entry.size;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${size} bytes` : `${size.toFixed(1)} ${units[unit]}`;
}

async function failure(response) {
  let message = `The request failed (HTTP ${response.status}).`;
  try {
    const body = await response.json();
    if (body && typeof body.error === "string" && body.error) message = body.error;
  } catch {
    // not JSON: keep the plain message
  }
  return new ApiError(response.status, message);
}

export class FilesPane {
  constructor(root, instanceId) {
    this.base = `/api/instances/${encodeURIComponent(instanceId)}/files`;
    this.list = root.querySelector("[data-files-list]");
    this.table = root.querySelector("[data-files-table]");
    this.where = root.querySelector("[data-files-where]");
    this.upButton = root.querySelector("[data-files-up]");
    this.error = root.querySelector("[data-files-error]");
    this.status = root.querySelector("[data-files-status]");
    this.input = root.querySelector("[data-files-upload]");
    this.dir = []; // names below the working directory
    this.running = null;
    this.upButton.addEventListener("click", () => {
      this.dir.pop();
      this.load();
    });
    this.input.addEventListener("change", () => {
      const [file] = this.input.files;
      if (file) this.upload(file);
    });
  }

  // Called with each fresh instance: load when it starts running, explain otherwise.
  follow(instance) {
    const running = instance.status === "running";
    if (running === this.running) return;
    this.running = running;
    this.input.disabled = !running;
    if (running) {
      this.load();
      return;
    }
    this.table.hidden = true;
    this.list.replaceChildren();
    showMessage(this.error, "");
    showMessage(this.status, `The instance is ${instance.status}. Its files can be reached while it runs.`);
  }

  path(name) {
    return [...this.dir, name].join("/");
  }

  async load() {
    const where = this.dir.join("/");
    this.where.textContent = where ? `work/${where}` : "work";
    this.upButton.hidden = this.dir.length === 0;
    try {
      const query = where ? `?path=${encodeURIComponent(where)}` : "";
      const response = await fetch(`${this.base}${query}`, { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) throw await failure(response);
      this.render(await response.json());
      showMessage(this.error, "");
    } catch (error) {
      showMessage(this.error, `Could not list the files: ${error.message}`);
    }
  }

  render(listing) {
    const rows = listing.entries.map((entry) => {
      let name;
      if (entry.type === "directory") {
        name = el("button", { type: "button", className: "link-button", text: `${entry.name}/` });
        name.addEventListener("click", () => {
          this.dir.push(entry.name);
          this.load();
        });
      } else if (entry.type === "file") {
        const href = `${this.base}?path=${encodeURIComponent(this.path(entry.name))}`;
        name = el("a", { href, download: entry.name, text: entry.name });
      } else {
        name = el("span", { text: entry.type === "symlink" ? `${entry.name} (link)` : entry.name });
      }
      const modified = el("time", { datetime: entry.modifiedAt, text: formatDate(entry.modifiedAt) });
      return el("tr", { "data-file": entry.name }, el("td", {}, name), el("td", { "data-label": "Size", text: sizeText(entry) }), el("td", { "data-label": "Modified" }, modified));
    });
    this.list.replaceChildren(...rows);
    this.table.hidden = rows.length === 0;
    let note = rows.length === 0 ? "This directory is empty." : "";
    if (listing.truncated) note = "Only the first 10,000 entries are shown.";
    showMessage(this.status, note);
  }

  async upload(file) {
    const target = this.path(file.name);
    showMessage(this.status, `Uploading ${file.name}…`);
    try {
      const response = await fetch(`${this.base}?path=${encodeURIComponent(target)}`, {
        method: "PUT",
        credentials: "same-origin",
        headers: { "content-type": "application/octet-stream" },
        body: file,
      });
      if (!response.ok) throw await failure(response);
      showMessage(this.error, "");
      await this.load();
      showMessage(this.status, `Uploaded ${file.name}.`);
    } catch (error) {
      showMessage(this.status, "");
      showMessage(this.error, `Could not upload ${file.name}: ${error.message}`);
    } finally {
      this.input.value = "";
    }
  }
}
