// /login: POST /api/auth/login, then on to where the user was going.
import { api } from "./api.js";
import { clearFormErrors, showFormError, whileBusy } from "./ui.js";

const form = document.getElementById("login-form");
const next = form.dataset.next || "/dashboard";

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearFormErrors(form);
  const email = form.email.value.trim();
  const password = form.password.value;
  if (!email) return showFormError(form, "Enter your email address.", "email");
  if (!password) return showFormError(form, "Enter your password.", "password");
  const button = form.querySelector("button[type=submit]");
  try {
    await whileBusy(button, "Signing in…", () =>
      api("POST", "/api/auth/login", { email, password }, { redirectOn401: false }),
    );
  } catch (error) {
    showFormError(form, error.message);
    form.password.select();
    return;
  }
  // `next` was checked server-side to be a path on this site.
  location.assign(next);
});
