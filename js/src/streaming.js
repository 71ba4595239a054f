// Streaming Markdown, pure (no DOM): which part of a growing reply is final, and how to show
// the part that is not without flashing raw markup.
//
// A reply is cut into a frozen prefix (complete top-level blocks, rendered once and never
// touched again) and a live tail (the last open block or two, re-rendered per frame). A block
// is complete once another block starts after a blank line: nothing that arrives later can
// change it (CommonMark's block structure does not look back across a blank line at top level,
// except for list items, which markdown-it keeps in one list block anyway). The one exception
// accepted: a reference definition ("[x]: url") arriving after a frozen block that uses it.

const BLANK = /^[ \t]*$/;

/** Line start offsets of `text` (one per line, the first is 0). */
function lineStarts(text) {
  const starts = [0];
  for (let i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) starts.push(i + 1);
  return starts;
}

/**
 * How many characters at the start of `text` are complete top-level blocks (0: none yet).
 *
 * `md` is a markdown-it instance. The cut is always at the start of a line that starts a block
 * and follows a blank line, so `text.slice(cut)` parses alone as it does in context.
 */
export function completePrefix(md, text) {
  const tokens = md.parse(text, {});
  const starts = [];
  for (const token of tokens) {
    if (token.level === 0 && token.nesting !== -1 && token.map) starts.push(token.map[0]);
  }
  if (starts.length < 2) return 0;
  const lines = lineStarts(text);
  let cut = 0;
  for (let i = 1; i < starts.length; i++) {
    const line = starts[i];
    if (line <= starts[i - 1]) continue;
    const before = text.slice(lines[line - 1], lines[line] - 1);
    if (BLANK.test(before)) cut = lines[line];
  }
  return cut;
}

// An unfinished last line whose meaning its next characters decide: a fence being opened or
// closed, a heading marker, a list marker or thematic break or setext underline, a number that
// may become an ordered list, a table row.
const AMBIGUOUS_LINE = [
  /^ {0,3}(`{1,2}|~{1,2})$/,
  /^ {0,3}(`{3,}|~{3,})[^`]*$/,
  /^ {0,3}#{1,6}$/,
  /^ {0,3}([-*_=+][ \t]*)+$/,
  /^ {0,3}\d{1,9}[.)]?$/,
  /^ {0,3}\|/,
];
const FENCE_LINE = /^ {0,3}(`{3,}|~{3,})/;
const TABLE_LINE = /^ {0,3}\|/;
const BLOCK_MARKER = /^ {0,3}([-*+]|\d{1,9}[.)]|>|#{1,6}|\|)( |$)/;

/** Whether `text` (starting at a block boundary) ends inside an open code fence. */
function insideFence(text) {
  let open = null;
  for (const line of text.split("\n")) {
    const match = FENCE_LINE.exec(line);
    if (match === null) continue;
    const fence = match[1];
    if (open === null) open = fence;
    else if (fence[0] === open[0] && fence.length >= open.length && line.trim() === fence) open = null;
  }
  return open !== null;
}

/** The closing markers an unfinished inline run needs, or where to cut a dangling opener. */
function inlineFix(segment) {
  const stack = [];  // [marker, position]
  let i = 0;
  const n = segment.length;
  const isSpace = (c) => c === undefined || /\s/.test(c);
  const isWord = (c) => c !== undefined && /[\p{L}\p{N}]/u.test(c);
  while (i < n) {
    const c = segment[i];
    if (c === "\\") { i += 2; continue; }
    if (c === "`") {
      let run = 1;
      while (segment[i + run] === "`") run++;
      const ticks = "`".repeat(run);
      const close = segment.indexOf(ticks, i + run);
      if (close === -1) {
        // A code span runs to the end (held back while its opening run may still grow).
        if (i + run >= n) return { stack, cut: i };
        stack.push([ticks, i]);
        break;
      }
      i = close + run;
      continue;
    }
    if (c === "*" || c === "_" || c === "~") {
      let run = 1;
      while (segment[i + run] === c) run++;
      const before = segment[i - 1];
      const after = segment[i + run];
      const opens = !isSpace(after) && !(c === "_" && isWord(before));
      const closes = !isSpace(before) && !(c === "_" && isWord(after));
      let markers = [];
      if (c === "~") markers = run === 2 ? ["~~"] : [];
      else if (run === 1) markers = [c];
      else if (run === 2) markers = [c + c];
      else if (run === 3) markers = [c, c + c];
      const top = stack.length ? stack[stack.length - 1][0] : null;
      const second = stack.length > 1 ? stack[stack.length - 2][0] : null;
      if (closes && run === 3 && c !== "~" && [top, second].sort().join() === [c, c + c].sort().join()) {
        stack.length -= 2;
      } else if (closes && markers.length === 1 && top === markers[0]) {
        stack.pop();
      } else if (i + run >= n) {
        // A run at the very end is an opener or a closer still being typed: hold it back.
        return { stack, cut: i };
      } else if (opens && markers.length) {
        for (const m of markers) stack.push([m, i]);
      }
      i += run;
      continue;
    }
    i++;
  }
  return { stack, cut: n };
}

/**
 * What to render for the live tail `text` while it streams: never raw markup that the next
 * characters would turn into formatting.
 *
 * - An unfinished last line that is ambiguous (see AMBIGUOUS_LINE) is held back.
 * - A table header still waiting for its delimiter row is held back.
 * - Inside an open code fence nothing else changes: markdown-it shows an unclosed fence as code
 *   up to the end, which is what a streaming fence should look like.
 * - Otherwise the last inline run is closed: an open `**`, `*`, `_`, `__`, `~~` or code span
 *   gets its closing marker (a dangling opener with nothing after it is dropped instead), an
 *   unfinished link `[text](http...` shows as its text.
 */
export function liveSource(text) {
  const lastBreak = text.lastIndexOf("\n") + 1;
  const lastLine = text.slice(lastBreak);
  if (lastLine !== "" && AMBIGUOUS_LINE.some((re) => re.test(lastLine))) {
    text = text.slice(0, lastBreak);
  }
  if (insideFence(text)) return text;
  // A table header waiting for its delimiter row: every line of the last paragraph is a row.
  const blank = text.lastIndexOf("\n\n");
  const paragraph = blank === -1 ? 0 : blank + 2;
  const rows = text.slice(paragraph).split("\n").filter((line) => line !== "");
  if (rows.length > 0 && rows.length <= 1 && rows.every((line) => TABLE_LINE.test(line))) {
    return text.slice(0, paragraph);
  }
  // The last inline run: from the last blank line or the last line that starts a new block.
  let start = paragraph;
  const lines = lineStarts(text);
  for (let k = lines.length - 1; k >= 0 && lines[k] >= start; k--) {
    if (BLOCK_MARKER.test(text.slice(lines[k], lines[k] + 12))) { start = lines[k]; break; }
  }
  let segment = text.slice(start);
  // An unfinished link or image shows as its text until its URL is complete.
  segment = segment
    .replace(/!?\[([^\]\n]*)\]\([^)\s]*$/, "$1")
    .replace(/!?\[([^\]\n]*)\]$/, "$1")
    .replace(/!?\[([^\]\n]*)$/, "$1");
  const { stack, cut } = inlineFix(segment);
  segment = segment.slice(0, cut);
  if (stack.length) {
    // Trailing spaces would stop a closer from closing (it must follow a non-space).
    segment = segment.replace(/\s+$/, "");
    let tail = "";
    while (stack.length) {
      const [marker, at] = stack[stack.length - 1];
      if (segment.slice(at + marker.length).trim() === "") {
        segment = segment.slice(0, at);  // a dangling opener: nothing to format yet
        stack.pop();
        continue;
      }
      break;
    }
    for (let k = stack.length - 1; k >= 0; k--) tail += stack[k][0];
    segment = segment.replace(/\s+$/, "") + tail;
  }
  return text.slice(0, start) + segment;
}
