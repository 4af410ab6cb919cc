// The logs panel: the last lines from GET /api/instances/{id}/logs, then, while "Follow" is
// on, new lines from an EventSource on ?follow=1 (each data: frame is one JSON record). The
// EventSource reconnects by itself and resumes with Last-Event-ID, and turning "Follow" back
// on resumes from the last line shown (?cursor=), so no line is shown twice.
import { api } from "./api.js";
import { el, showMessage } from "./ui.js";

const MAX_LINES = 1000;

export class LogsPane {
  constructor(root, instanceId) {
    this.list = root.querySelector("[data-logs]");
    this.empty = root.querySelector("[data-logs-empty]");
    this.error = root.querySelector("[data-logs-error]");
    this.followBox = root.querySelector("[data-logs-follow]");
    this.base = `/api/instances/${encodeURIComponent(instanceId)}/logs`;
    this.source = null;
    this.cursor = null; // the id of the last streamed line, to resume after
    this.retry = 0;
    this.followBox.addEventListener("change", () => this.setFollow(this.followBox.checked));
  }

  async start() {
    if (this.followBox.checked) {
      // The follow stream replays the last lines itself before the new ones.
      this.setFollow(true);
      return;
    }
    await this.loadRecent();
  }

  async loadRecent() {
    try {
      const data = await api("GET", `${this.base}?lines=200`);
      this.list.replaceChildren();
      for (const line of data.logs || []) this.append(line);
      showMessage(this.error, "");
    } catch (error) {
      showMessage(this.error, `Could not load the logs: ${error.message}`);
    }
    this.empty.hidden = this.list.childElementCount > 0;
  }

  setFollow(on) {
    if (!on) {
      this.source?.close();
      this.source = null;
      return;
    }
    if (this.source) return;
    // Pick up after the last line shown; without one, start over from the last 200 lines.
    let query = "follow=1&lines=200";
    if (this.cursor) query = `follow=1&cursor=${encodeURIComponent(this.cursor)}`;
    else this.list.replaceChildren();
    const source = new EventSource(`${this.base}?${query}`, { withCredentials: true });
    this.source = source;
    source.addEventListener("open", () => {
      showMessage(this.error, "");
      this.empty.hidden = this.list.childElementCount > 0;
    });
    source.addEventListener("message", (event) => {
      if (event.lastEventId) this.cursor = event.lastEventId;
      try {
        this.append(JSON.parse(event.data));
      } catch {
        this.append({ timestamp: "", level: "info", message: String(event.data) });
      }
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (the server answered an error, e.g. no machine yet): retry later.
        showMessage(this.error, "The log stream is not available right now. Retrying…");
        if (this.source === source) this.source = null;
        clearTimeout(this.retry);
        this.retry = setTimeout(() => this.followBox.checked && this.setFollow(true), 5000);
      } else {
        showMessage(this.error, "The log stream was interrupted. Reconnecting…");
      }
    });
  }

  append(line) {
    // Follow the tail only when the reader is already at the bottom.
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    const level = String(line.level || "info").toLowerCase();
    const time = line.timestamp ? new Date(line.timestamp) : null;
    const shown = time && !Number.isNaN(time.getTime()) ? time.toLocaleTimeString() : line.timestamp || "";
    this.list.append(
      el(
        "li",
        { className: `log log--${level}` },
        el("time", { className: "log__time", datetime: line.timestamp || null, text: shown }),
        el("span", { className: "log__level", text: level }),
        el("span", { className: "log__message", text: line.message ?? "" }),
      ),
    );
    while (this.list.childElementCount > MAX_LINES) this.list.firstElementChild.remove();
    this.empty.hidden = true;
    if (atBottom) this.list.scrollTop = this.list.scrollHeight;
  }

  stop() {
    clearTimeout(this.retry);
    this.source?.close();
    this.source = null;
  }
}
