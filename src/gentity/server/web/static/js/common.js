// Behaviour every signed-in page shares: the sign-out button.
import { api } from "./api.js";
import { showMessage } from "./ui.js";

const button = document.querySelector("[data-sign-out]");
if (button) {
  const error = document.querySelector("[data-sign-out-error]");
  button.addEventListener("click", async () => {
    button.disabled = true;
    showMessage(error, "");
    try {
      await api("POST", "/api/auth/logout", undefined, { redirectOn401: false });
    } catch (failure) {
      // The session may still be alive: say so next to the button rather than pretend.
      button.disabled = false;
      showMessage(error, `Could not sign out. ${failure.message}`);
      return;
    }
    location.assign("/login");
  });
}
