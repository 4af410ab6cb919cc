// Small DOM helpers shared by the pages. Data is only ever put in the page as text
// (textContent, attributes), never parsed as HTML.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "className") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) node.append(child);
  return node;
}

// Show `message` in `target` (a role=alert element), or hide it when message is empty.
export function showMessage(target, message) {
  if (!target) return;
  target.textContent = message || "";
  target.hidden = !message;
}

// Like showMessage, with a "Dismiss" button that hides the message again.
export function showDismissible(target, message) {
  if (!target || !message) return showMessage(target, "");
  const dismiss = el("button", { type: "button", className: "dismiss", "aria-label": "Dismiss", text: "×" });
  dismiss.addEventListener("click", () => showMessage(target, ""));
  target.replaceChildren(el("span", { text: message }), dismiss);
  target.classList.add("form-error--dismissible");
  target.hidden = false;
}

// Show an error for a form next to the field it names ("email: not a valid address" sits
// under the email input), else in the form's general error slot. Inputs are left as typed.
export function showFormError(form, message, fieldName) {
  clearFormErrors(form);
  const name = fieldName || (/^([A-Za-z][\w.]*):\s/.exec(message || "") || [])[1];
  const input = name ? form.querySelector(`[name="${CSS.escape(name.split(".")[0])}"]`) : null;
  if (input && input.closest(".field")) {
    const id = `${input.id || input.name}-error`;
    const note = el("p", { className: "field-error", id, text: message });
    input.closest(".field").append(note);
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", [input.getAttribute("aria-describedby"), id].filter(Boolean).join(" "));
    input.focus();
    return;
  }
  const slot = form.querySelector("[data-error]") || form.parentElement.querySelector("[data-error]");
  showMessage(slot, message);
  slot?.focus?.();
}

export function clearFormErrors(form) {
  for (const note of form.querySelectorAll(".field-error")) {
    const input = note.closest(".field")?.querySelector("[aria-invalid]");
    if (input) {
      input.removeAttribute("aria-invalid");
      const rest = (input.getAttribute("aria-describedby") || "").split(" ").filter((id) => id && id !== note.id);
      if (rest.length) input.setAttribute("aria-describedby", rest.join(" "));
      else input.removeAttribute("aria-describedby");
    }
    note.remove();
  }
  showMessage(form.querySelector("[data-error]") || form.parentElement.querySelector("[data-error]"), "");
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function formatDate(value) {
  if (!value) return "—";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : dateFormat.format(date);
}

export function relativeTime(value) {
  if (!value) return "never";
  const seconds = Math.round((Date.now() - new Date(value).getTime()) / 1000);
  if (Number.isNaN(seconds)) return String(value);
  if (seconds < 60) return "just now";
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  for (const [unit, size] of [["day", 86400], ["hour", 3600], ["minute", 60]]) {
    if (Math.abs(seconds) >= size) return rtf.format(-Math.round(seconds / size), unit);
  }
  return "just now";
}

export function setTime(node, value) {
  node.textContent = formatDate(value);
  if (value) node.setAttribute("datetime", value);
}

// Ask before something that cannot be undone, in the page's <dialog id="confirm-dialog">.
// Resolves true only when the confirming button was chosen; Escape and Cancel say no.
export function confirmDialog({ title, body, confirmLabel = "Delete" }) {
  const dialog = document.getElementById("confirm-dialog");
  dialog.querySelector("[data-confirm-title]").textContent = title;
  dialog.querySelector("[data-confirm-body]").textContent = body;
  dialog.querySelector("[data-confirm-button]").textContent = confirmLabel;
  const opener = document.activeElement;
  dialog.returnValue = "cancel";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        if (opener && document.contains(opener)) opener.focus();
        resolve(dialog.returnValue === "confirm");
      },
      { once: true },
    );
  });
}

// Run `task` with `button` disabled and labelled `busyLabel`, restoring it afterwards.
export async function whileBusy(button, busyLabel, task) {
  const label = button.textContent;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  if (busyLabel) button.textContent = busyLabel;
  try {
    return await task();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    button.textContent = label;
  }
}
