// The browser half of streamkit's delta protocol (streamkit/render/delta.py documents it):
// deltas arrive as custom messages {kind: "delta", stream, seq, text}; a gap asks the kernel for
// a snapshot ({kind: "sync"}), and what was put on screen is acknowledged in batches
// ({kind: "ack", stream, seq, shown: [[seq, t], ...], t, page}). Every view that shows a delta
// text (the plain one and the Markdown one) is a `sink` fed by this one function.

const ACK_EVERY_MS = 500;
// performance.now() counts from this page's load: the kernel keeps one clock offset per page.
const PAGE = Math.random().toString(36).slice(2);

/**
 * Follow the delta messages of `model` into `sink`.
 *
 * sink.reset(text, msg): show `text` instead of whatever was shown (a new stream, a snapshot).
 * sink.append(text, msg): show `text` after what is shown; `msg` is the whole delta message.
 * sink.piece (optional): called instead of append for a delta of another part than the answer
 *   (`msg.part`: "reasoning", "tool"); such deltas share the stream's seqs, so a sink without
 *   it skips them and stays in step.
 * sink.afterFrame (optional): called on the animation frame that acknowledges deltas, before the
 *   acknowledgement is noted, so a sink that renders once per frame has rendered by then.
 *
 * Returns a function that stops following (and acknowledges what is still pending).
 */
export function followDeltas(model, sink) {
  let stream = null;         // the stream whose deltas are shown (null: only the saved value)
  let seq = -1;              // the last delta shown
  let syncing = false;       // a snapshot was asked for and has not come yet
  let noted = [];            // [seq, t]: on screen, not acknowledged yet
  let framed = [];           // appended, waiting for the next frame
  let frameAsked = false;
  let ackTimer = null;
  let lastAck = -Infinity;
  let ackedStream = null;    // the stream whose first delta was acknowledged

  const sendAck = () => {
    if (ackTimer !== null) clearTimeout(ackTimer);
    ackTimer = null;
    if (noted.length === 0) return;
    lastAck = performance.now();
    const last = noted[noted.length - 1][0];
    model.send({ kind: "ack", stream: stream, seq: last, shown: noted, t: lastAck, page: PAGE });
    noted = [];
  };
  const scheduleAck = () => {
    if (ackTimer !== null) return;
    // A stream's first delta at once (an early clock sample), then at most every 500 ms.
    const first = ackedStream !== stream;
    ackedStream = stream;
    const wait = first ? 0 : Math.max(0, lastAck + ACK_EVERY_MS - performance.now());
    ackTimer = setTimeout(sendAck, wait);
  };
  const onFrame = () => {
    frameAsked = false;
    if (sink.afterFrame) sink.afterFrame();
    const t = performance.now();
    for (const s of framed) noted.push([s, t]);
    framed = [];
    scheduleAck();
  };
  const markShown = (s) => {
    framed.push(s);
    if (frameAsked) return;
    frameAsked = true;
    // The next animation frame runs once the new text is laid out, just before it is painted.
    // A hidden page gets no frames: note the time at once rather than never.
    if (document.visibilityState === "visible") requestAnimationFrame(onFrame);
    else setTimeout(onFrame, 0);
  };
  const switchStream = (next) => {
    // What the old stream showed is acknowledged before the new one starts.
    if (framed.length > 0) onFrame();
    sendAck();
    stream = next;
  };
  const requestSync = () => {
    if (syncing) return;
    syncing = true;
    model.send({ kind: "sync" });
  };
  const onMessage = (msg) => {
    if (msg.kind === "delta") {
      if (msg.stream !== stream) {
        if (msg.seq !== 0) return requestSync();  // joined mid-stream
        switchStream(msg.stream);
        seq = -1;
        sink.reset("", msg);
      }
      if (msg.seq <= seq) return;  // a snapshot already held it
      if (msg.seq !== seq + 1) return requestSync();
      // O(delta): what was shown before is not touched
      if (!msg.part) sink.append(msg.text, msg);
      else if (sink.piece) sink.piece(msg);
      seq = msg.seq;
      markShown(seq);
    } else if (msg.kind === "snapshot") {
      syncing = false;
      if (msg.stream === null) return;
      if (msg.stream !== stream) switchStream(msg.stream);
      seq = msg.seq;
      sink.reset(msg.text, msg);
      if (seq >= 0) markShown(seq);  // everything up to seq is on screen from this frame
    }
  };

  model.on("msg:custom", onMessage);
  return () => {
    sendAck();
    model.off("msg:custom", onMessage);
  };
}
