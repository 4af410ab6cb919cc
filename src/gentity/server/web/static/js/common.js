// Behaviour every signed-in page shares: the sign-out button.
import { api, setUnauthorizedHandler, signInAgain } from "./api.js";
import { showMessage } from "./ui.js";

const button = document.querySelector("[data-sign-out]");
if (button) {
  const error = document.querySelector("[data-sign-out-error]");
  button.addEventListener("click", async () => {
    button.disabled = true;
    showMessage(error, "");
    // A poll answered 401 once the session is gone must not race this to /login?next=….
    setUnauthorizedHandler(() => {});
    try {
      await api("POST", "/api/auth/logout", undefined, { redirectOn401: false });
    } catch (failure) {
      // The session may still be alive: say so next to the button rather than pretend.
      button.disabled = false;
      setUnauthorizedHandler(signInAgain);
      showMessage(error, `Could not sign out. ${failure.message}`);
      return;
    }
    location.assign("/login");
  });
}
