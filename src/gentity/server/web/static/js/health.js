// What the list and the instance page say about a running instance beyond its status: the
// agent's health (the API's `agent`), as a short label with the detail on hover, and the
// machine's size, from the catalog's defaults for its agent (the API gives no size per instance).
import { formatDate, relativeTime } from "./ui.js";

const STATES = {
  installing: ["Agent installing", "busy"],
  starting: ["Agent starting", "busy"],
  ready: ["Agent ready", "ok"],
  backoff: ["Agent crashed, restarting", "warn"],
  crashed: ["Agent crashed", "bad"],
  exited: ["Agent exited", "off"],
};

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

function exitText(code) {
  // The guest reports 128 + N when signal N ended the process.
  return code > 128 ? `signal ${code - 128}` : `code ${code}`;
}

// {label, tone, detail} for a running instance; null when there is nothing to say.
export function agentHealth(instance) {
  if (instance.status !== "running") return null;
  const agent = instance.agent;
  if (!agent) {
    return {
      label: "Agent not answering",
      tone: "warn",
      detail: "The instance's guest did not answer in time; the next refresh asks again.",
    };
  }
  const [label, tone] = STATES[agent.state] || [`Agent ${agent.state}`, "busy"];
  const detail = [agent.restarts ? `Restarted ${plural(agent.restarts, "time")}` : "Not restarted"];
  if (agent.lastExitCode !== null && agent.lastExitCode !== undefined) {
    const when = agent.lastExitAt ? ` ${relativeTime(agent.lastExitAt)} (${formatDate(agent.lastExitAt)})` : "";
    detail.push(`last exit with ${exitText(agent.lastExitCode)}${when}`);
  }
  if (agent.readyAt) detail.push(`ready since ${formatDate(agent.readyAt)}`);
  return { label, tone, detail: detail.join(" · ") };
}

// Show the health in `node` (hidden when there is none); the detail goes in its tooltip.
export function renderHealth(node, instance) {
  const health = agentHealth(instance);
  node.hidden = !health;
  node.textContent = health ? health.label : "";
  node.title = health ? health.detail : "";
  node.dataset.tone = health ? health.tone : "";
  return health;
}

function memoryText(mb) {
  return mb % 1024 === 0 ? `${mb / 1024} GB` : `${mb} MB`;
}

// "1 CPU · 2 GB memory · 5 GB volume", or "" when the catalog does not know the agent.
export function resourcesText(agents, instance) {
  const agent = agents.find((each) => each.id === instance.agentType);
  if (!agent) return "";
  return `${plural(agent.defaultCpus, "CPU")} · ${memoryText(agent.defaultMemoryMb)} memory · ${agent.defaultVolumeGb} GB volume`;
}
