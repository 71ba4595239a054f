// The Markdown view's other parts: a reasoning model's thinking and its tool calls.
//
// Thinking: a collapsed, dimmed <details> above the answer; each reasoning delta is appended as
// a text node (plain text: escaped by construction, O(delta), nothing re-rendered), and the
// summary says "Thinking… 1.2 s" while it grows, "Thought for 2.3 s" once the answer starts.
// Tool calls: a card per call under the answer, the function's name and its arguments growing
// as they stream (text nodes again), pretty-printed once they parse as JSON.

/** Arguments indented when they are complete JSON, else null. */
export function prettyArguments(text) {
  const trimmed = text.trim();
  if (!trimmed.startsWith("{") && !trimmed.startsWith("[")) return null;
  try {
    return JSON.stringify(JSON.parse(trimmed), null, 2);
  } catch (_error) {
    return null;  // not complete yet
  }
}

/** The Thinking section: `element` goes above the answer. */
export function thinkingSection() {
  const element = document.createElement("details");
  element.className = "streamkit-md-thinking";
  const summary = document.createElement("summary");
  const body = document.createElement("div");
  body.className = "streamkit-md-thinking-body";
  element.append(summary, body);
  element.hidden = true;
  let text = "";
  let done = false;

  return {
    element,
    get text() { return text; },
    reset(next, label) {
      text = next || "";
      body.textContent = text;
      done = Boolean(label);
      summary.textContent = label || (text ? "Thinking…" : "");
      element.hidden = !text;
      element.classList.toggle("streamkit-md-thinking-live", !done && Boolean(text));
    },
    append(delta, label) {
      text += delta;
      body.append(delta);  // a new text node: the old text is not touched
      element.hidden = false;
      if (!done) {
        summary.textContent = label || "Thinking…";
        element.classList.add("streamkit-md-thinking-live");
      }
    },
    finish(label) {
      if (!text) return;
      done = true;
      summary.textContent = label || "Thought";
      element.classList.remove("streamkit-md-thinking-live");
    },
  };
}

/** The tool-call cards: `element` goes under the answer. */
export function toolCards() {
  const element = document.createElement("div");
  element.className = "streamkit-md-tools";
  let cards = [];  // {name, args, raw, box}

  const card = (index) => {
    while (cards.length <= index) {
      const box = document.createElement("div");
      box.className = "streamkit-md-tool";
      const name = document.createElement("div");
      name.className = "streamkit-md-tool-name";
      const args = document.createElement("pre");
      args.className = "streamkit-md-tool-args";
      box.append(name, args);
      element.appendChild(box);
      cards.push({ name, args, raw: "", box });
    }
    return cards[index];
  };
  const settle = (c) => {
    const pretty = prettyArguments(c.raw);
    if (pretty !== null) {
      c.args.textContent = pretty;
      c.box.classList.add("streamkit-md-tool-done");
    }
  };

  return {
    element,
    reset(tools) {
      element.replaceChildren();
      cards = [];
      (tools || []).forEach((tool, index) => {
        const c = card(index);
        c.name.textContent = tool.name || "";
        c.raw = tool.arguments || "";
        c.args.textContent = c.raw;
        settle(c);
      });
    },
    append(index, name, piece) {
      const c = card(index);
      if (name) c.name.textContent = name;
      if (!piece) return;
      c.raw += piece;
      if (c.box.classList.contains("streamkit-md-tool-done")) c.args.textContent = c.raw;
      else c.args.append(piece);
      settle(c);
    },
  };
}
