// The browser terminal: xterm.js on the instance's terminal WebSocket.
//
// Protocol (JSON text frames): we send {"type":"input","data"} and {"type":"resize","cols","rows"};
// the server sends {"type":"output","data"} and, when the agent process ends,
// {"type":"exit","exitCode","signal"} and closes. On every (re)connect the server first replays
// the recent output, so the screen is reset before each connection instead of duplicating it.
// A dropped socket is retried with backoff; after an exit the agent is restarted by the
// server's policy, so we reconnect after a short pause.

const MAX_BACKOFF_MS = 15000;
const MAX_ATTEMPTS = 8;
const AFTER_EXIT_MS = 1500;

const THEME = {
  background: "#14181c",
  foreground: "#e6e9ec",
  cursor: "#7fd1c7",
  selectionBackground: "#3b4a57",
};

// The agent exited and its guest is about to start it again: the instance itself runs on.
function agentRestarts(instance) {
  return instance.status === "restarting" && instance.agent?.state === "backoff";
}

export class TerminalPane {
  // `onExit` (optional) is awaited when the process ends, before the exit is explained: the
  // page refreshes the instance, which reaches follow() with what it is doing now.
  constructor(root, instanceId, { onExit } = {}) {
    this.onExit = onExit;
    this.instance = null; // as the page last saw it
    this.root = root;
    this.instanceId = instanceId;
    this.screen = root.querySelector("[data-terminal-screen]");
    this.stateLabel = root.querySelector("[data-terminal-state]");
    this.reconnectButton = root.querySelector("[data-terminal-reconnect]");
    this.socket = null;
    this.attempts = 0;
    this.retryTimer = null;
    this.wanted = false; // whether we should be connected (the instance is running)
    this.exited = false;
    this.restarting = false; // a restart asked for on this page: its exit is no crash

    this.term = new window.Terminal({
      cursorBlink: true,
      fontFamily: 'ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas, monospace',
      fontSize: 14,
      scrollback: 5000,
      theme: THEME,
    });
    this.fitAddon = new window.FitAddon.FitAddon();
    this.term.loadAddon(this.fitAddon);
    this.term.open(this.screen);
    this.fit();

    this.term.onData((data) => this.send({ type: "input", data }));
    this.term.onResize(({ cols, rows }) => this.send({ type: "resize", cols, rows }));
    // The pane changes size with the window, the phone's rotation and the page layout.
    let pending = 0;
    const refit = () => {
      cancelAnimationFrame(pending);
      pending = requestAnimationFrame(() => this.fit());
    };
    new ResizeObserver(refit).observe(this.screen);
    window.addEventListener("resize", refit);
    this.reconnectButton.addEventListener("click", () => {
      this.wanted = true;
      this.attempts = 0;
      this.connect();
      this.term.focus();
    });
    this.screen.addEventListener("click", () => this.term.focus());
  }

  fit() {
    if (!this.screen.offsetParent && this.screen.clientWidth === 0) return; // not laid out
    try {
      this.fitAddon.fit();
    } catch {
      // Fitting a terminal that is not yet visible throws; the next resize fits it.
    }
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const path = `/api/instances/${encodeURIComponent(this.instanceId)}/terminal`;
    // The initial size lets the server replay the recent output at the width it will be shown.
    return `${scheme}//${location.host}${path}?cols=${this.term.cols}&rows=${this.term.rows}`;
  }

  setState(text, { canReconnect = false, tone = "" } = {}) {
    this.stateLabel.textContent = text;
    this.stateLabel.dataset.tone = tone;
    this.root.dataset.state = tone;
    this.reconnectButton.hidden = !canReconnect;
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
    }
  }

  // The instance as the page's poll saw it: connect while it runs; a restart, asked for here or
  // anywhere else, is expected as one.
  follow(instance, reason) {
    this.instance = instance;
    // `restarting` is either a restart someone asked for (a fresh machine: its exit is no
    // crash) or the agent's own exit while its guest waits to start it again (the instance
    // runs on, and its terminal reconnects to the new agent).
    const own = agentRestarts(instance);
    if (instance.status === "restarting" && !own) this.restarting = true;
    this.setAvailable(instance.status === "running" || own, reason);
  }

  // Connect when the instance can take a terminal; called again on every status poll.
  setAvailable(available, reason) {
    if (available && !this.wanted) {
      this.wanted = true;
      this.attempts = 0;
      this.connect();
    } else if (!available && this.wanted) {
      this.wanted = false;
      this.disconnect();
      this.setState(reason || "The instance is not running.", { tone: "off" });
    } else if (!available) {
      this.setState(reason || "The instance is not running.", { tone: "off" });
    }
  }

  connect() {
    clearTimeout(this.retryTimer);
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) return;
    this.exited = false;
    this.setState("Connecting…", { tone: "busy" });
    this.fit();
    const socket = new WebSocket(this.url());
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.attempts = 0;
      // The server replays recent output first: start from a clean screen.
      this.term.reset();
      if (this.restarting) {
        this.restarting = false;
        this.term.write("\x1b[2m[restarted: a fresh session; earlier output is gone]\x1b[0m\r\n");
      }
      this.fit();
      this.send({ type: "resize", cols: this.term.cols, rows: this.term.rows });
      this.setState("Connected", { tone: "on" });
    });
    socket.addEventListener("message", (event) => this.onMessage(event));
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.onClose(event);
    });
  }

  onMessage(event) {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (message.type === "output" && typeof message.data === "string") {
      this.term.write(message.data);
    } else if (message.type === "exit") {
      this.exited = true;
      this.explainExit(message);
    }
  }

  // A stop or restart asked for elsewhere (another tab, the CLI) ends the process too: look at
  // the instance before calling the exit the agent's own.
  async explainExit(message) {
    if (!this.restarting && this.onExit) {
      const before = this.instance?.updatedAt;
      const restarts = this.instance?.agent?.restarts;
      try {
        await this.onExit();
      } catch {
        // Not knowing the status, the exit is reported as it came.
      }
      // Running again already, but its status changed meanwhile: a restart quicker than the
      // look, unless it was the agent's own (its guest counts those; a fresh machine starts
      // counting again).
      const now = this.instance;
      const agentCameBack = restarts !== undefined && (now?.agent?.restarts ?? 0) > restarts;
      if (now?.status === "running" && before && now.updatedAt !== before && !agentCameBack) {
        this.restarting = true;
      }
    }
    if (this.restarting) {
      this.term.write("\r\n\x1b[2m[restarting the instance…]\x1b[0m\r\n");
      this.setState("Restarting… the terminal reconnects by itself.", { tone: "busy" });
    } else if (this.wanted) {
      // Still running: the agent ended by itself, and the guest restarts it.
      const how = message.signal ? `signal ${message.signal}` : `code ${message.exitCode}`;
      this.term.write(`\r\n\x1b[2m[the process exited with ${how}]\x1b[0m\r\n`);
      this.setState(`The process exited with ${how}. It restarts by itself; reconnecting…`, {
        canReconnect: true,
        tone: "busy",
      });
    }
  }

  onClose(event) {
    if (!this.wanted) return;
    if (this.exited) {
      this.retryTimer = setTimeout(() => this.connect(), AFTER_EXIT_MS);
      return;
    }
    this.attempts += 1;
    if (this.attempts > MAX_ATTEMPTS) {
      this.setState("Disconnected. The terminal could not be reached.", { canReconnect: true, tone: "off" });
      return;
    }
    const delay = Math.min(500 * 2 ** this.attempts, MAX_BACKOFF_MS);
    const why = event.reason ? ` (${event.reason})` : "";
    this.setState(`Disconnected${why}. Reconnecting in ${Math.round(delay / 1000)} s…`, {
      canReconnect: true,
      tone: "busy",
    });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  // The next exit is a restart this page asked for: say so instead of reporting a crash.
  expectRestart() {
    this.restarting = true;
  }

  // The restart did not happen (refused or failed): exits are news again.
  cancelRestart() {
    this.restarting = false;
  }

  disconnect() {
    clearTimeout(this.retryTimer);
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(1000, "client closing");
  }

  focus() {
    this.term.focus();
  }
}
