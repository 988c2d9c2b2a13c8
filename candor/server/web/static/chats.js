// Conversations, kept in this browser's localStorage under one key, exportable as JSON.
// Conversations are not secrets (the API key is kept apart, in sessionStorage).

const STORE_ITEM = "candor.chats.v1";
export const SETTING_NAMES = ["system", "temperature", "top_p", "top_k", "num_predict", "seed", "extra"];

function newId() {
  // crypto.randomUUID exists only in secure contexts; a page served over plain http on a LAN is not one.
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
}

export function newChat(settings = {}, model = "") {
  const now = new Date().toISOString();
  return { id: newId(), title: "New chat", created: now, updated: now, model, settings: { ...settings }, messages: [] };
}

export function load() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORE_ITEM) || "null");
    if (saved && Array.isArray(saved.chats)) return saved;
  } catch {
    // unreadable storage starts afresh below; the broken text stays until the next save
  }
  return { version: 1, current: null, chats: [] };
}

// Return an error message, or "" when saved.
export function save(state) {
  try {
    localStorage.setItem(STORE_ITEM, JSON.stringify(state));
    return "";
  } catch {
    return "This browser's storage is full: export your conversations, then delete old ones.";
  }
}

export function titleOf(text) {
  const line = text.trim().split("\n")[0];
  return line.length > 60 ? `${line.slice(0, 57)}...` : line || "New chat";
}

export function exportFile(state) {
  const body = JSON.stringify({ exported: new Date().toISOString(), chats: state.chats }, null, 2);
  const day = new Date().toISOString().slice(0, 10);
  return { name: `candor-chats-${day}.json`, blob: new Blob([body], { type: "application/json" }) };
}
