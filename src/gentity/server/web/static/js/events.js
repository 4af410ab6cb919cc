// The events panel: the instance's status changes, newest at the top, live. One EventSource on
// GET /api/instances/{id}/events?follow=1 sends the recent events (oldest first) and then each
// new one; the browser reconnects by itself with Last-Event-ID, so none is shown twice. The
// stream ends after the `destroyed` event, and so does this panel.
import { statusLabel } from "./actions.js";
import { el, showMessage } from "./ui.js";

const RECENT = 50;
const MAX_SHOWN = 200;
// Steps of one operation are seconds apart: show the seconds.
const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

function formatTime(value) {
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value || "") : timeFormat.format(date);
}

// Who asked, in words: the actor is a credential id or the server itself.
function actorText(actor) {
  if (actor.startsWith("token:")) return "an API token";
  if (actor.startsWith("session:")) return "a dashboard session";
  if (actor === "reconciler") return "the server, settling the machine";
  return "the server";
}

export class EventsPane {
  constructor(root, instanceId) {
    this.list = root.querySelector("[data-events]");
    this.empty = root.querySelector("[data-events-empty]");
    this.error = root.querySelector("[data-events-error]");
    this.url = `/api/instances/${encodeURIComponent(instanceId)}/events?follow=1&limit=${RECENT}`;
    this.source = null;
    this.seen = 0; // the highest event id shown: a replay after a reconnect never repeats one
  }

  start() {
    if (this.source) return;
    const source = new EventSource(this.url, { withCredentials: true });
    this.source = source;
    source.addEventListener("open", () => showMessage(this.error, ""));
    source.addEventListener("message", (event) => {
      let change;
      try {
        change = JSON.parse(event.data);
      } catch {
        return;
      }
      if (typeof change.id !== "number" || change.id <= this.seen) return;
      this.seen = change.id;
      this.prepend(change);
      if (change.to === "destroyed") this.stop();
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        showMessage(this.error, "The event history is not available right now.");
        if (this.source === source) this.source = null;
      } else {
        showMessage(this.error, "The event stream was interrupted. Reconnecting…");
      }
    });
  }

  prepend(change) {
    const from = change.from ? statusLabel(change.from) : null;
    const item = el(
      "li",
      { className: `event event--${change.to}`, "data-event-id": change.id },
      el("time", { className: "event__time", datetime: change.time, text: formatTime(change.time) }),
      el("span", { className: "event__change", text: from ? `${from} → ${statusLabel(change.to)}` : statusLabel(change.to) }),
      el("span", { className: "event__reason", text: change.reason || "" }),
      el("span", { className: "event__actor muted", text: `by ${actorText(String(change.actor || ""))}` }),
    );
    this.list.prepend(item);
    while (this.list.childElementCount > MAX_SHOWN) this.list.lastElementChild.remove();
    this.empty.hidden = true;
  }

  stop() {
    this.source?.close();
    this.source = null;
  }
}
