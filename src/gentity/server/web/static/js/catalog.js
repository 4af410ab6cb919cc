// Human names for the catalog's identifiers: agent "shell" is "Shell", model "none/bash" is
// "Bash login shell". The raw identifiers stay available as a tooltip.
import { api } from "./api.js";

let loading = null;

// The catalog's agents, fetched once per page; [] when it cannot be had (labels fall back to ids).
export function loadAgents() {
  loading ??= api("GET", "/api/catalog/agents").then(
    (data) => data.agents || [],
    () => [],
  );
  return loading;
}

export function agentLabel(agents, agentType) {
  return agents.find((agent) => agent.id === agentType)?.name || agentType;
}

export function modelLabel(agents, instance) {
  const agent = agents.find((each) => each.id === instance.agentType);
  const model = agent?.models.find(
    (each) => each.provider === instance.modelProvider && each.name === instance.modelName,
  );
  return model ? model.label : `${instance.modelProvider}/${instance.modelName}`;
}

// Put the agent's and the model's names in `agentNode` and `modelNode`, ids on hover.
export function showLabels(agents, instance, agentNode, modelNode) {
  agentNode.textContent = agentLabel(agents, instance.agentType);
  agentNode.title = instance.agentType;
  modelNode.textContent = modelLabel(agents, instance);
  modelNode.title = `${instance.modelProvider}/${instance.modelName}`;
}
