// DOM for models and messages. Text from models and users goes in as textContent, never as HTML.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value == null) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children);
  return node;
}

export function formatBytes(n) {
  if (!n) return "";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// "name: family, 268M, Q4_K_M, 253.1 MB": what the file is, from its metadata, not from its name.
export function modelLabel(model) {
  const d = model.details || {};
  const facts = [d.family, d.parameter_size, d.quantization_level, formatBytes(model.size)].filter(Boolean);
  const usable = model.candor?.usable === false ? " (unusable)" : "";
  return `${model.name}: ${facts.join(", ")}${usable}`;
}

export function modelInfo(model) {
  if (!model) return "";
  const c = model.candor || {};
  return [c.identity, c.problem, ...(c.name_claims || [])].filter(Boolean).join(" · ");
}

function seconds(ms) {
  return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

export function statsText(msg) {
  const s = msg.stats;
  const parts = [];
  if (s?.eval_count != null && s.eval_duration) {
    parts.push(`${s.eval_count} tokens`, `${(s.eval_count / (s.eval_duration / 1e9)).toFixed(1)} tokens/s`);
  }
  if (s?.ttft_ms != null) parts.push(`first token ${seconds(s.ttft_ms)}`);
  if (s?.done_reason === "length") parts.push("token limit reached");
  if (msg.stopped) parts.push("stopped by you");
  return parts.join(" · ");
}

// One message: returns the element and a function that redraws it from msg (cheap while streaming).
export function messageView(msg) {
  const who = msg.role === "user" ? "You" : msg.model || "Assistant";
  const text = el("div", { class: "text" });
  const thinkingText = el("div", { class: "thinking-text" });
  const thinking = el("details", { class: "thinking", hidden: true }, el("summary", {}, "Thinking"), thinkingText);
  const stats = el("p", { class: "stats" });
  const error = el("p", { class: "error", role: "alert" });
  const node = el("article", { class: `msg ${msg.role}` }, el("h2", { class: "who" }, who), thinking, text, stats, error);
  const update = () => {
    text.textContent = msg.content;
    thinking.hidden = !msg.thinking;
    thinkingText.textContent = msg.thinking || "";
    stats.textContent = msg.role === "assistant" ? statsText(msg) : "";
    error.textContent = msg.error || "";
    error.hidden = !msg.error;
    node.setAttribute("aria-busy", msg.streaming ? "true" : "false");
  };
  update();
  return { node, update };
}
