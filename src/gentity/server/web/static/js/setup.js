// /setup: the first account, created through POST /api/auth/signup, becomes the admin.
import { api } from "./api.js";
import { clearFormErrors, showFormError, whileBusy } from "./ui.js";

const form = document.getElementById("setup-form");
const minLength = Number(form.dataset.minPassword || 8);

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearFormErrors(form);
  const email = form.email.value.trim();
  const password = form.password.value;
  if (!email) return showFormError(form, "Enter an email address.", "email");
  if (password.length < minLength) {
    return showFormError(form, `The password must be at least ${minLength} characters.`, "password");
  }
  if (password !== form.password2.value) {
    return showFormError(form, "The two passwords do not match.", "password2");
  }
  const button = form.querySelector("button[type=submit]");
  try {
    await whileBusy(button, "Creating account…", () =>
      api("POST", "/api/auth/signup", { email, password }, { redirectOn401: false }),
    );
  } catch (error) {
    if (error.status === 403) {
      showFormError(form, "This server already has its first account. Sign in instead.");
      return;
    }
    showFormError(form, error.message);
    return;
  }
  location.assign("/dashboard");
});
