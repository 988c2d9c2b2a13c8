// The chat page: wires the form, the conversation list and the key prompt to candor's /api routes.

import { Api } from "./api.js";
import * as chats from "./chats.js";
import { el, messageView, modelInfo, modelLabel } from "./view.js";

const $ = (id) => document.getElementById(id);
// The page is at BASE/ui; the API is at BASE/api (BASE is "" unless a proxy serves candor under a path).
const api = new Api(location.pathname.replace(/\/ui\/?$/, ""));
const state = chats.load();
let models = [];
let running = null; // {controller, reply, view} while an answer streams
let keyPrompt = null; // the open key dialog's promise, shared by every request that got a 401

const FLOATS = ["temperature", "top_p"];
const INTEGERS = ["top_k", "num_predict", "seed"];

function current() {
  return state.chats.find((chat) => chat.id === state.current);
}

function persist() {
  const problem = chats.save(state);
  if (problem) notify(problem);
}

function notify(message) {
  $("notice").textContent = message;
  $("notice").hidden = !message;
}

// Settings: the form shows the current chat's; a new chat starts with the same.

function readSettings() {
  return Object.fromEntries(chats.SETTING_NAMES.map((name) => [name, $(name).value]));
}

function writeSettings(settings) {
  for (const name of chats.SETTING_NAMES) $(name).value = settings?.[name] ?? "";
}

function optionsOf(settings) {
  const options = {};
  for (const name of [...FLOATS, ...INTEGERS]) {
    const text = String(settings[name] ?? "").trim();
    if (!text) continue;
    const value = INTEGERS.includes(name) ? Number.parseInt(text, 10) : Number(text);
    if (!Number.isFinite(value)) throw new Error(`${name} must be a number; clear the field for the default.`);
    options[name] = value;
  }
  const extra = String(settings.extra ?? "").trim();
  if (extra) {
    let parsed;
    try {
      parsed = JSON.parse(extra);
    } catch {
      throw new Error('"More options" is not valid JSON; write an object such as {"min_p": 0.05}.');
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new Error('"More options" must be a JSON object such as {"min_p": 0.05}.');
    }
    Object.assign(options, parsed);
  }
  return options;
}

// The API key: asked for once when the server answers 401, then every request is retried.

function askKey() {
  if (keyPrompt) return keyPrompt;
  const dialog = $("key-dialog");
  $("key-reason").textContent = api.key
    ? "The server refused the key this tab holds. Enter the key `candor serve` was started with."
    : "This server was started with --api-key (or CANDOR_API_KEY). Enter that key to use it.";
  keyPrompt = new Promise((resolve) => {
    const finish = (given) => {
      $("key-form").onsubmit = null;
      $("key-cancel").onclick = null;
      dialog.oncancel = null;
      dialog.close();
      keyPrompt = null;
      resolve(given);
    };
    $("key-form").onsubmit = (event) => {
      event.preventDefault();
      api.key = $("key").value.trim();
      finish(true);
    };
    $("key-cancel").onclick = () => finish(false);
    dialog.oncancel = (event) => {
      event.preventDefault();
      finish(false);
    };
  });
  $("key").value = "";
  dialog.showModal();
  $("key").focus();
  return keyPrompt;
}

async function withKey(call) {
  for (;;) {
    try {
      return await call();
    } catch (error) {
      if (error.kind !== "auth" || !(await askKey())) throw error;
    }
  }
}

// Models: what each file really is, from /api/tags.

async function refreshModels() {
  try {
    models = await withKey(() => api.models());
  } catch (error) {
    notify(`Could not list the models: ${error.message}`);
    return;
  }
  const select = $("model");
  select.replaceChildren(
    ...models.map((m) => el("option", { value: m.name, disabled: m.candor?.usable === false }, modelLabel(m))),
  );
  if (!models.length) {
    notify("The store has no models: run `candor pull hf.co/ORG/REPO:QUANT` (or `candor import FILE`), then reload.");
    return;
  }
  const usable = models.filter((m) => m.candor?.usable !== false).map((m) => m.name);
  const wanted = [current()?.model, state.lastModel].find((name) => usable.includes(name));
  select.value = wanted || usable[0] || "";
  showModel();
  $("log").scrollTop = $("log").scrollHeight; // the model line above the log may have moved it
}

function showModel() {
  const name = $("model").value;
  $("model-info").textContent = modelInfo(models.find((m) => m.name === name));
  state.lastModel = name;
  const chat = current();
  if (chat && name) chat.model = name;
}

// Conversations.

function renderChats() {
  const list = $("chats");
  list.replaceChildren(
    ...state.chats.map((chat) => {
      const button = el("button", { type: "button", "aria-current": chat.id === state.current ? "page" : false }, chat.title);
      button.addEventListener("click", () => openChat(chat.id));
      return el("li", {}, button);
    }),
  );
}

function renderLog() {
  const log = $("log");
  const chat = current();
  log.replaceChildren();
  for (const msg of chat?.messages || []) {
    const view = messageView(msg);
    if (running && msg === running.reply) running.view = view;
    log.append(view.node);
  }
  log.scrollTop = log.scrollHeight;
  updateButtons();
}

function openChat(id) {
  state.current = id;
  const chat = current();
  writeSettings(chat.settings);
  if (chat.model && models.some((m) => m.name === chat.model)) {
    $("model").value = chat.model;
    showModel();
  }
  persist();
  renderChats();
  renderLog();
  $("prompt").focus();
}

function startChat() {
  const chat = current();
  if (chat && !chat.messages.length) {
    $("prompt").focus();
    return;
  }
  const fresh = chats.newChat(readSettings(), $("model").value);
  state.chats.unshift(fresh);
  openChat(fresh.id);
}

function deleteChat() {
  const chat = current();
  if (!chat) return;
  if (running?.chat === chat) running.controller.abort();
  state.chats = state.chats.filter((c) => c !== chat);
  state.current = state.chats[0]?.id ?? null;
  if (!state.current) {
    const fresh = chats.newChat(readSettings(), $("model").value);
    state.chats.push(fresh);
    state.current = fresh.id;
  }
  openChat(state.current);
}

function exportChats() {
  const { name, blob } = chats.exportFile(state);
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// Answers.

function updateButtons() {
  const chat = current();
  $("send").disabled = Boolean(running);
  $("stop").disabled = !running;
  $("regenerate").disabled = Boolean(running) || !chat?.messages.some((m) => m.role === "user");
}

function followLog() {
  const log = $("log");
  if (log.scrollHeight - log.scrollTop - log.clientHeight < 120) log.scrollTop = log.scrollHeight;
}

async function answer() {
  const chat = current();
  let options;
  try {
    options = optionsOf(chat.settings);
  } catch (error) {
    notify(error.message);
    return;
  }
  const model = $("model").value;
  if (!model) {
    notify("Pick a model first (the list comes from the server's store).");
    return;
  }
  notify("");
  const history = chat.messages
    .filter((m) => m.role === "user" || m.content)
    .map(({ role, content }) => ({ role, content }));
  const system = (chat.settings.system || "").trim();
  const messages = system ? [{ role: "system", content: system }, ...history] : history;
  const reply = { role: "assistant", model, content: "", thinking: "", streaming: true };
  chat.messages.push(reply);
  running = { controller: new AbortController(), reply, chat, view: messageView(reply) };
  if (current() === chat) $("log").append(running.view.node);
  updateButtons();
  followLog();
  const started = performance.now();
  let first = null;
  let retry = false;
  try {
    for await (const line of api.chat({ model, messages, options }, running.controller.signal)) {
      const part = line.message || {};
      if (first === null && (part.content || part.thinking)) first = performance.now() - started;
      reply.content += part.content || "";
      reply.thinking += part.thinking || "";
      if (line.done) {
        const { eval_count, eval_duration, prompt_eval_count, done_reason } = line;
        reply.stats = { eval_count, eval_duration, prompt_eval_count, done_reason, ttft_ms: first };
      }
      running.view.update();
      followLog();
    }
  } catch (error) {
    if (error.kind === "aborted") {
      reply.stopped = true;
      reply.stats = { ttft_ms: first };
    } else if (error.kind === "auth") {
      chat.messages.pop();
      running.view.node.remove();
      retry = true;
    } else {
      reply.error = error.message;
    }
  } finally {
    reply.streaming = false;
    if (!retry) running.view.update();
    running = null;
    chat.updated = new Date().toISOString();
    persist();
    renderChats();
    updateButtons();
  }
  if (!retry) return;
  if (await askKey()) await answer();
  else notify("No API key given: your message is kept; press Regenerate to send it with a key.");
}

function send() {
  const text = $("prompt").value;
  if (running || !text.trim()) return;
  const chat = current();
  chat.messages.push({ role: "user", content: text });
  if (chat.title === "New chat") chat.title = chats.titleOf(text);
  $("prompt").value = "";
  const view = messageView(chat.messages.at(-1));
  $("log").append(view.node);
  persist();
  renderChats();
  answer();
}

function regenerate() {
  const chat = current();
  if (running || !chat) return;
  while (chat.messages.length && chat.messages.at(-1).role === "assistant") chat.messages.pop();
  if (!chat.messages.length) return;
  renderLog();
  answer();
}

function stop() {
  running?.controller.abort();
}

function bind() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && running && !$("key-dialog").open) {
      event.preventDefault();
      stop();
    }
  });
  $("stop").addEventListener("click", stop);
  $("regenerate").addEventListener("click", regenerate);
  $("new-chat").addEventListener("click", startChat);
  $("delete-chat").addEventListener("click", deleteChat);
  $("export").addEventListener("click", exportChats);
  $("forget-key").addEventListener("click", () => {
    api.key = "";
    notify("The API key is forgotten; the page asks again when the server needs it.");
  });
  $("model").addEventListener("change", () => {
    showModel();
    persist();
  });
  $("settings").addEventListener("input", () => {
    const chat = current();
    if (chat) chat.settings = readSettings();
    persist();
  });
  $("settings").addEventListener("submit", (event) => event.preventDefault());
}

function start() {
  bind();
  if (!current()) {
    const first = state.chats[0] || chats.newChat({}, state.lastModel || "");
    if (!state.chats.includes(first)) state.chats.unshift(first);
    state.current = first.id;
  }
  if (window.matchMedia("(max-width: 720px)").matches) $("chats-box").open = false;
  writeSettings(current().settings);
  renderChats();
  renderLog();
  refreshModels();
  $("prompt").focus();
}

start();
