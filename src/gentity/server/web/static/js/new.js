// /dashboard/new: pick an agent and a model from the public catalog, then POST /api/instances.
// The create call blocks until the machine is started, so the page shows progress meanwhile.
import "./common.js";
import { api } from "./api.js";
import { clearFormErrors, el, showFormError, showMessage } from "./ui.js";

const form = document.getElementById("new-form");
const agentsBox = document.getElementById("agents");
const modelSelect = form.model;
const apiKeyField = form.querySelector("[data-api-key-field]");
const progress = form.querySelector("[data-progress]");
const elapsed = form.querySelector("[data-elapsed]");
const submit = form.querySelector("[data-submit]");
const cancel = form.querySelector("[data-cancel]");
let agents = [];

function selectedAgent() {
  const chosen = form.querySelector("input[name=agent]:checked");
  return chosen ? agents.find((agent) => agent.id === chosen.value) : null;
}

function renderAgents() {
  agentsBox.replaceChildren();
  agentsBox.removeAttribute("aria-busy");
  for (const agent of agents) {
    const id = `agent-${agent.id}`;
    // The radio is named by the agent's name alone and described by the rest, so a screen
    // reader says "Shell, radio button" before the details.
    const option = el(
      "label",
      { className: "agent-option", for: id },
      el("input", {
        type: "radio",
        name: "agent",
        value: agent.id,
        id,
        required: true,
        "aria-labelledby": `${id}-name`,
        "aria-describedby": `${id}-desc`,
      }),
      el(
        "span",
        { className: "agent-option__body" },
        el("span", { className: "agent-option__name", id: `${id}-name`, text: agent.name }),
        el("span", { className: "agent-option__desc", id: `${id}-desc`, text: agent.description }),
        el("span", {
          className: "agent-option__meta",
          text: `${agent.defaultCpus} CPU · ${agent.defaultMemoryMb} MB · ${agent.defaultVolumeGb} GB volume`,
        }),
      ),
    );
    agentsBox.append(option);
  }
}

// Fill the model list for the chosen agent and show the API key field only when it needs one.
function onAgentChange() {
  const agent = selectedAgent();
  modelSelect.replaceChildren();
  if (!agent) {
    modelSelect.append(el("option", { value: "", text: "Pick an agent first" }));
    modelSelect.disabled = true;
    apiKeyField.hidden = true;
    return;
  }
  for (const model of agent.models) {
    const value = `${model.provider}/${model.name}`;
    modelSelect.append(el("option", { value, text: model.label }));
  }
  modelSelect.disabled = false;
  apiKeyField.hidden = !agent.requiresApiKey;
  form.apiKey.required = agent.requiresApiKey;
}

async function loadCatalog() {
  try {
    const data = await api("GET", "/api/catalog/agents");
    agents = data.agents || [];
    renderAgents();
    // Coming back with the browser's back button may have an agent still checked.
    onAgentChange();
  } catch (error) {
    agentsBox.removeAttribute("aria-busy");
    agentsBox.replaceChildren(
      el("p", { className: "form-error", role: "alert", text: `Could not load the agent catalog: ${error.message}` }),
    );
  }
}

// The provider's regions as a picker. "Default" sends no region and lets the server choose;
// a provider that lists none leaves that as the only choice.
async function loadRegions() {
  const select = form.region;
  const hint = form.querySelector("[data-region-hint]");
  let regions = [];
  try {
    regions = (await api("GET", "/api/regions")).regions || [];
  } catch (error) {
    showMessage(hint, `Could not load the regions (${error.message}); the server picks one.`);
  }
  select.replaceChildren(el("option", { value: "", text: "Default" }));
  for (const region of regions) {
    select.append(el("option", { value: region.code, text: `${region.label} · ${region.code}` }));
  }
  select.disabled = regions.length === 0;
}

function setCreating(creating) {
  submit.disabled = creating;
  submit.textContent = creating ? "Creating…" : "Create instance";
  progress.hidden = !creating;
  // The server has no way to call a create off, so Cancel would only pretend to.
  if (creating) cancel.setAttribute("aria-disabled", "true");
  else cancel.removeAttribute("aria-disabled");
  form.setAttribute("aria-busy", String(creating));
}

cancel.addEventListener("click", (event) => {
  if (cancel.getAttribute("aria-disabled") === "true") event.preventDefault();
});

form.addEventListener("change", (event) => {
  if (event.target.name === "agent") onAgentChange();
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearFormErrors(form);
  const agent = selectedAgent();
  if (!agent) return showFormError(form, "Choose an agent.", "agent");
  const [modelProvider, ...rest] = (modelSelect.value || "").split("/");
  const modelName = rest.join("/");
  if (!modelProvider || !modelName) return showFormError(form, "Choose a model.", "model");
  const apiKey = form.apiKey.value.trim();
  if (agent.requiresApiKey && !apiKey) {
    return showFormError(form, `${agent.name} needs an API key for ${modelProvider}.`, "apiKey");
  }
  const body = { agentType: agent.id, modelProvider, modelName };
  const name = form.name.value.trim();
  const region = form.region.value;
  if (name) body.name = name;
  if (region) body.region = region;
  if (agent.requiresApiKey) body.apiKey = apiKey;
  const autoStop = form.autoStopMinutes.value.trim();
  if (autoStop) {
    if (!/^\d+$/.test(autoStop) || Number(autoStop) > 10080) {
      return showFormError(form, "Auto-stop is a whole number of minutes, 0 to 10080.", "autoStopMinutes");
    }
    body.autoStopMinutes = Number(autoStop);
  }

  setCreating(true);
  const started = Date.now();
  const tick = setInterval(() => {
    elapsed.textContent = `${Math.round((Date.now() - started) / 1000)} s`;
  }, 1000);
  elapsed.textContent = "";
  try {
    const created = await api("POST", "/api/instances", body);
    location.assign(`/dashboard/instances/${encodeURIComponent(created.id)}`);
  } catch (error) {
    setCreating(false);
    showFormError(form, error.message);
  } finally {
    clearInterval(tick);
  }
});

showMessage(form.querySelector("[data-error]"), "");
loadCatalog();
loadRegions();
