// candor's own Ollama API, as the page uses it: the model list and streamed chats.
// Every request carries the API key when one was given; each failure becomes an ApiError whose
// message says what happened and what to do.

const KEY_ITEM = "candor.apiKey";

export class ApiError extends Error {
  // kind: auth | busy | load | notfound | bad | network | dropped | aborted | server
  constructor(kind, message, status = 0) {
    super(message);
    this.kind = kind;
    this.status = status;
  }
}

export class Api {
  constructor(base) {
    this.base = base;
  }

  // sessionStorage: the key lives as long as the tab and is never written to the profile on disk.
  get key() {
    return sessionStorage.getItem(KEY_ITEM) || "";
  }

  set key(value) {
    if (value) sessionStorage.setItem(KEY_ITEM, value);
    else sessionStorage.removeItem(KEY_ITEM);
  }

  async request(path, init = {}) {
    const headers = { ...(init.headers || {}) };
    if (this.key) headers.Authorization = `Bearer ${this.key}`;
    if (init.body) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(this.base + path, { ...init, headers });
    } catch (error) {
      if (error.name === "AbortError") throw new ApiError("aborted", "Stopped.");
      throw new ApiError(
        "network",
        `Cannot reach the candor server at ${location.origin}: is \`candor serve\` still running? ` +
          "Start it again, then press Regenerate.",
      );
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  async models() {
    const response = await this.request("/api/tags");
    return (await response.json()).models || [];
  }

  // Yield each NDJSON line of /api/chat; the last one has done: true.
  async *chat(body, signal) {
    const response = await this.request("/api/chat", {
      method: "POST",
      body: JSON.stringify({ ...body, stream: true }),
      signal,
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        pending += decoder.decode(value, { stream: true });
        let end;
        while ((end = pending.indexOf("\n")) >= 0) {
          const text = pending.slice(0, end).trim();
          pending = pending.slice(end + 1);
          if (!text) continue;
          const line = JSON.parse(text);
          if (line.error) throw new ApiError("server", `The server stopped this answer: ${line.error}`);
          yield line;
          if (line.done) return;
        }
      }
    } catch (error) {
      if (error instanceof ApiError) throw error;
      if (error.name === "AbortError" || signal?.aborted) throw new ApiError("aborted", "Stopped.");
      throw dropped();
    } finally {
      reader.releaseLock();
    }
    throw dropped(); // the stream ended without its final line
  }
}

function dropped() {
  return new ApiError(
    "dropped",
    "The connection to the server dropped before the answer finished; what arrived is kept. " +
      "Check that `candor serve` is running, then press Regenerate.",
  );
}

async function errorOf(response) {
  let text = "";
  try {
    const body = await response.json();
    const error = body.error ?? body.detail;
    text = typeof error === "string" ? error : error?.message || "";
  } catch {
    text = response.statusText;
  }
  const status = response.status;
  switch (status) {
    case 401:
      return new ApiError("auth", "This server needs an API key (it was started with --api-key).", status);
    case 403:
      return new ApiError("bad", `The server refused this page: ${text}`, status);
    case 404:
      return new ApiError("notfound", `${text}. Pick another model in the list.`, status);
    case 503:
      return new ApiError(
        "busy",
        `The server is busy: ${text}. Wait for the answers it is writing to finish, then press Regenerate.`,
        status,
      );
    case 422:
    case 500:
      return new ApiError("load", `The model could not be run: ${text}`, status);
    default:
      return new ApiError(status >= 500 ? "server" : "bad", `The server answered ${status}: ${text}`, status);
  }
}
