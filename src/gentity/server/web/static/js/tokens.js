// /dashboard/settings/tokens: list, mint and revoke API tokens.
// A new token's plaintext exists only in this page's memory and the one read-only field that
// shows it: it is never written to storage, and "Done" (or leaving the page) forgets it.
import "./common.js";
import { api } from "./api.js";
import { clearFormErrors, confirmDialog, el, formatDate, relativeTime, showFormError, showMessage, whileBusy } from "./ui.js";

const form = document.getElementById("mint-form");
const secretBox = document.querySelector("[data-secret]");
const secretValue = document.querySelector("[data-secret-value]");
const copyStatus = document.querySelector("[data-copy-status]");
const tbody = document.querySelector("[data-tokens]");
const emptyNote = document.querySelector("[data-tokens-empty]");
const listError = document.querySelector("[data-list-error]");

function tokenRow(token) {
  const revoke = el("button", { type: "button", className: "button button--small button--danger-quiet", text: "Revoke" });
  const rowError = el("span", { className: "form-error form-error--inline", role: "alert", hidden: true });
  revoke.setAttribute("aria-label", `Revoke ${token.name}`);
  revoke.addEventListener("click", async () => {
    const confirmed = await confirmDialog({
      title: `Revoke ${token.name}?`,
      body: `Anything using ${token.prefix}… stops working at once. This cannot be undone.`,
      confirmLabel: "Revoke token",
    });
    if (!confirmed) return;
    try {
      await whileBusy(revoke, "Revoking…", () =>
        api("DELETE", `/api/tokens/${encodeURIComponent(token.id)}`),
      );
    } catch (error) {
      showMessage(rowError, `Could not revoke: ${error.message}`);
      return;
    }
    load();
  });
  const lastUsed = el("td", { "data-label": "Last used", text: relativeTime(token.lastUsedAt) });
  if (token.lastUsedAt) lastUsed.title = formatDate(token.lastUsedAt);
  return el(
    "tr",
    { "data-token-id": token.id },
    el("th", { scope: "row", "data-label": "Name", text: token.name }),
    el("td", { "data-label": "Prefix" }, el("code", { text: `${token.prefix}…` })),
    el("td", { "data-label": "Created", text: formatDate(token.createdAt) }),
    lastUsed,
    el("td", { className: "table__actions" }, revoke, rowError),
  );
}

async function load() {
  try {
    const data = await api("GET", "/api/tokens");
    const tokens = data.tokens || [];
    tbody.replaceChildren(...tokens.map(tokenRow));
    tbody.removeAttribute("aria-busy");
    emptyNote.hidden = tokens.length > 0;
    showMessage(listError, "");
  } catch (error) {
    showMessage(listError, `Could not load your tokens: ${error.message}`);
  }
}

function forgetSecret() {
  secretValue.value = "";
  secretBox.hidden = true;
  showMessage(copyStatus, "");
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearFormErrors(form);
  forgetSecret();
  const name = form.name.value.trim();
  if (!name) return showFormError(form, "Give the token a name, such as the machine it is for.", "name");
  let created;
  try {
    created = await whileBusy(form.querySelector("button[type=submit]"), "Creating…", () =>
      api("POST", "/api/tokens", { name }),
    );
  } catch (error) {
    showFormError(form, error.message);
    return;
  }
  form.reset();
  secretValue.value = created.token;
  secretBox.hidden = false;
  secretBox.focus();
  secretValue.select();
  load();
});

document.querySelector("[data-copy]").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(secretValue.value);
    copyStatus.textContent = "Copied to the clipboard.";
  } catch {
    // Without clipboard permission (plain http on another host), leave it selected instead.
    secretValue.focus();
    secretValue.select();
    copyStatus.textContent = "Copying is not allowed here: the token is selected, press Ctrl+C (⌘C) to copy it.";
  }
});

document.querySelector("[data-secret-done]").addEventListener("click", () => {
  forgetSecret();
  form.name.focus();
});

load();
