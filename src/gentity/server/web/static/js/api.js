// The one way pages talk to the server: the public REST API, same-origin, cookie-authenticated.
// Errors become ApiError with a message in plain words, ready to show next to what caused it.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const FALLBACK_MESSAGES = {
  0: "Could not reach the server. Check your connection and try again.",
  401: "Your session has ended. Please sign in again.",
  403: "The server refused this request.",
  404: "Not found: it may have been deleted.",
  409: "That is not possible in the current state.",
  413: "That is too large for the server to accept.",
  429: "Too many attempts. Wait a while and try again.",
};

function describe(status, body) {
  if (body && typeof body.error === "string" && body.error) {
    if (status >= 500) return `The server had a problem: ${body.error}`;
    return body.error;
  }
  if (status >= 500) return "The server had a problem. Try again in a moment.";
  return FALLBACK_MESSAGES[status] || `The request failed (HTTP ${status}).`;
}

// What to do when the session is gone; pages on an instance subdomain override it.
export function signInAgain() {
  const here = location.pathname + location.search;
  location.assign(`/login?next=${encodeURIComponent(here)}`);
}

let onUnauthorized = signInAgain;

export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

export async function api(method, path, body, { redirectOn401 = true } = {}) {
  const init = { method, credentials: "same-origin", cache: "no-store", headers: {} };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, FALLBACK_MESSAGES[0]);
  }
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (response.status === 401 && redirectOn401) onUnauthorized();
  if (!response.ok) throw new ApiError(response.status, describe(response.status, data));
  return data;
}
