// MarkdownText: the live Markdown delta view (streamkit/render/markdown.py).
//
// Deltas (the delta protocol of delta_core.js) grow the raw text; once per animation frame the
// text is rendered: complete blocks once, into frozen elements that are never touched again,
// and the last open block again, with its unfinished markup held back or closed (streaming.js).
// Every piece of HTML passes DOMPurify before it reaches the DOM: the text is a model's, and
// JupyterLab trusts outputs made in the running session.
import MarkdownIt from "markdown-it";
import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import c from "highlight.js/lib/languages/c";
import cpp from "highlight.js/lib/languages/cpp";
import css from "highlight.js/lib/languages/css";
import diff from "highlight.js/lib/languages/diff";
import go from "highlight.js/lib/languages/go";
import ini from "highlight.js/lib/languages/ini";
import java from "highlight.js/lib/languages/java";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import markdown from "highlight.js/lib/languages/markdown";
import plaintext from "highlight.js/lib/languages/plaintext";
import python from "highlight.js/lib/languages/python";
import rust from "highlight.js/lib/languages/rust";
import shell from "highlight.js/lib/languages/shell";
import sql from "highlight.js/lib/languages/sql";
import typescript from "highlight.js/lib/languages/typescript";
import xml from "highlight.js/lib/languages/xml";
import yaml from "highlight.js/lib/languages/yaml";

import { followDeltas } from "./delta_core.js";
import { thinkingSection, toolCards } from "./pieces.js";
import { completePrefix, liveSource } from "./streaming.js";

const LANGUAGES = {
  bash, c, cpp, css, diff, go, ini, java, javascript, json, markdown, plaintext, python, rust,
  shell, sql, typescript, xml, yaml,
};
for (const [name, language] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, language);

const escapeHtml = (s) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

const md = new MarkdownIt({
  html: false,  // raw HTML in a reply is shown as text, never parsed
  linkify: true,
  typographer: false,
  highlight(code, lang) {
    const name = (lang || "").trim().split(/\s+/)[0].toLowerCase();
    const cls = name ? ` language-${escapeHtml(name)}` : "";
    // Only named languages: guessing runs every grammar, too slow for once per frame.
    const body = name && hljs.getLanguage(name)
      ? hljs.highlight(code, { language: name, ignoreIllegals: true }).value
      : escapeHtml(code);
    return `<pre><code class="hljs${cls}">${body}</code></pre>`;
  },
});

// DOMPurify's own defaults drop <script>, on* attributes, javascript: URLs; these go too.
const PURIFY = {
  FORBID_TAGS: ["style", "iframe", "frame", "object", "embed", "form", "input", "button",
    "textarea", "select", "svg", "math", "link", "meta", "base"],
  FORBID_ATTR: ["srcdoc", "formaction", "xlink:href"],
  ALLOW_DATA_ATTR: false,
};
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

/** Markdown source to a sanitized fragment, with a copy button on every code block. */
function renderFragment(source) {
  const fragment = DOMPurify.sanitize(md.render(source), { ...PURIFY, RETURN_DOM_FRAGMENT: true });
  for (const pre of fragment.querySelectorAll("pre")) {
    const box = document.createElement("div");
    box.className = "streamkit-md-code";
    const button = document.createElement("button");
    button.className = "streamkit-md-copy-code";
    button.type = "button";
    button.title = "Copy this code";
    button.textContent = "Copy";
    pre.replaceWith(box);
    box.append(button, pre);
  }
  return fragment;
}

/** Put `text` on the clipboard; a hidden textarea and execCommand where the API is missing. */
async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (_error) {
      // denied (no permission, page not focused): try the old way
    }
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  let done = false;
  try {
    done = document.execCommand("copy");
  } finally {
    area.remove();
  }
  return done;
}

function flash(button, ok) {
  const label = button.textContent;
  button.textContent = ok ? "Copied" : "Copy failed";
  setTimeout(() => { button.textContent = label; }, 1200);
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "streamkit-md";
  const bar = document.createElement("div");
  bar.className = "streamkit-md-bar";
  const figures = document.createElement("span");
  figures.className = "streamkit-md-figures";
  const copy = document.createElement("button");
  copy.className = "streamkit-md-copy";
  copy.type = "button";
  copy.title = "Copy the reply as Markdown";
  copy.textContent = "Copy";
  bar.append(figures, copy);
  const body = document.createElement("div");
  body.className = "streamkit-md-body";
  const live = document.createElement("div");
  live.className = "streamkit-md-live";
  body.appendChild(live);
  const thinking = thinkingSection();
  const tools = toolCards();
  root.append(bar, thinking.element, body, tools.element);
  el.appendChild(root);

  let text = "";        // the raw Markdown so far
  let frozen = 0;       // text[:frozen] is rendered into frozen blocks
  let final = false;    // the stream ended: nothing is held back
  let dirty = false;
  let frame = null;
  let liveFigures = "";

  const clear = () => {
    for (const node of [...body.childNodes]) if (node !== live) node.remove();
    live.replaceChildren();
    frozen = 0;
  };
  const draw = () => {
    frame = null;
    if (!dirty) return;
    dirty = false;
    let tail = text.slice(frozen);
    const cut = final ? 0 : completePrefix(md, tail);
    if (cut > 0) {
      const block = document.createElement("div");
      block.className = "streamkit-md-block";
      block.appendChild(renderFragment(tail.slice(0, cut)));
      body.insertBefore(block, live);
      frozen += cut;
      tail = tail.slice(cut);
    }
    live.replaceChildren(renderFragment(final ? tail : liveSource(tail)));
    root.classList.toggle("streamkit-md-streaming", !final);
  };
  // Render at most once per frame, however many deltas came; a hidden page has no frames.
  const schedule = () => {
    dirty = true;
    if (frame !== null) return;
    frame = document.visibilityState === "visible"
      ? requestAnimationFrame(draw)
      : setTimeout(draw, 0);
  };
  const showFigures = () => {
    figures.textContent = model.get("figures") || liveFigures;
  };
  const hasValue = () =>
    Boolean(model.get("markdown") || model.get("reasoning") || (model.get("tools") || []).length);
  const showValue = () => {
    // `markdown` (with `reasoning`, `thought`, `tools`) is the saved final reply. Equal to what
    // streamed: the stream is over, show it all. Anything else (a page opened later, a saved
    // notebook): render it from scratch.
    const saved = model.get("markdown");
    const reasoning = model.get("reasoning");
    if (reasoning !== thinking.text) thinking.reset(reasoning, model.get("thought"));
    else thinking.finish(model.get("thought"));
    tools.reset(model.get("tools"));
    if (saved === text && text !== "") {
      final = true;
      schedule();
      return;
    }
    clear();
    text = saved;
    final = true;
    schedule();
  };

  const stop = followDeltas(model, {
    reset(next, msg) {
      clear();
      text = next;
      final = false;
      // A snapshot carries every part; a new stream's first delta starts them empty.
      thinking.reset(msg.kind === "snapshot" ? msg.reasoning : "", msg.thought);
      tools.reset(msg.kind === "snapshot" ? msg.tools : []);
      if (msg.figures !== undefined) liveFigures = msg.figures;
      schedule();
    },
    append(delta, msg) {
      text += delta;
      final = false;
      if (msg.thought !== undefined) thinking.finish(msg.thought);
      if (msg.figures !== undefined) {
        liveFigures = msg.figures;
        showFigures();
      }
      schedule();
    },
    piece(msg) {
      if (msg.part === "reasoning") thinking.append(msg.text, msg.thinking);
      else if (msg.part === "tool") {
        if (msg.thought !== undefined) thinking.finish(msg.thought);
        tools.append(msg.call, msg.name, msg.text);
      }
    },
    afterFrame() {
      // The acknowledgement says "on screen": render first if this frame has not yet (the
      // pending frame then finds nothing to do).
      if (dirty) draw();
    },
  });

  const onClick = async (event) => {
    const target = event.target;
    if (!(target instanceof HTMLElement)) return;
    if (target === copy) {
      flash(copy, await copyText(text || model.get("markdown")));
    } else if (target.classList.contains("streamkit-md-copy-code")) {
      const code = target.parentElement?.querySelector("pre code, pre");
      flash(target, await copyText(code ? code.textContent : ""));
    }
  };
  root.addEventListener("click", onClick);

  if (hasValue()) showValue();
  showFigures();
  // A reply of tool calls only leaves `markdown` empty: the other parts end a stream too.
  const onSaved = () => { if (hasValue()) showValue(); };
  model.on("change:markdown", showValue);
  model.on("change:tools", onSaved);
  model.on("change:reasoning", onSaved);
  model.on("change:figures", showFigures);
  return () => {
    stop();
    root.removeEventListener("click", onClick);
    model.off("change:markdown", showValue);
    model.off("change:tools", onSaved);
    model.off("change:reasoning", onSaved);
    model.off("change:figures", showFigures);
  };
}
export default { render };
