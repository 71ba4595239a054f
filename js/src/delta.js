// DeltaText: the plain-text delta view. Each delta is appended to one <pre> as a new text node.
import { followDeltas } from "./delta_core.js";

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "streamkit-delta";
  el.appendChild(root);
  let pre = null;  // where deltas are appended

  const showValue = () => {
    // `value` is the saved snapshot (HTML escaped by the kernel, like ipywidgets.HTML).
    root.innerHTML = model.get("value");
    pre = root.querySelector("pre");
    if (pre === null) {
      pre = document.createElement("pre");
      root.appendChild(pre);
    }
  };
  showValue();
  const stop = followDeltas(model, {
    reset: (text) => { pre.textContent = text; },
    append: (text) => { pre.append(text); },  // a new text node: the old text is not touched
  });
  model.on("change:value", showValue);
  return () => {
    stop();
    model.off("change:value", showValue);
  };
}
export default { render };
