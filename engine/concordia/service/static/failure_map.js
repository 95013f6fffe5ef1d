// The failure map on a saga's page: pick a failure point, see its compensation path drawn
// on the saga's diagram and what it leaves in place. Loaded beside app.js (its el() and
// api() helpers); it adds its section when app.js has drawn a saga page.
"use strict";

async function failureMap(name, version) {
  const base = `/sagas/${encodeURIComponent(name)}/failure-map`;
  let map;
  try { map = await api(`${base}?version=${version}`); } catch (error) { return; }
  const diagram = el("div", { class: "diagram", id: "failure-diagram" });
  const details = el("div", { id: "failure-details" });
  const choose = el("select", { id: "failure-point" },
    el("option", { value: "0" }, `every failure point (${map.points.length})`),
    map.points.map((p) => el("option", { value: String(p.point) },
                             `${p.point}. ${p.faults} → ${p.ends}`)));
  async function show() {
    const point = Number(choose.value);
    try {
      diagram.innerHTML = await api(`${base}/${point}?version=${version}&format=svg`, "image/svg+xml");
    } catch (error) { diagram.replaceChildren(el("p", { class: "error" }, String(error))); }
    const chosen = map.points.find((p) => p.point === point);
    if (!chosen) {
      details.replaceChildren(el("p", { class: "muted" },
        `${map.paths} paths, worst case ${map.worst_case}; pick a failure point to see its run.`));
      return;
    }
    const left = chosen.left_in_place.length
      ? el("ul", { id: "left-in-place" }, chosen.left_in_place.map((l) =>
          el("li", { "data-kind": l.kind }, l.effect, l.reason ? ` (${l.reason})` : ` (${l.kind})`)))
      : el("p", { class: "muted", id: "left-in-place" }, "nothing left in place");
    details.replaceChildren(
      el("dl", { class: "facts" },
        el("dt", {}, "compensates"), el("dd", { id: "compensates" }, chosen.compensates.join(", ") || "nothing"),
        el("dt", {}, "ends"), el("dd", {}, badge(chosen.ends)),
        el("dt", {}, "worst case"), el("dd", {}, chosen.worst_case),
        el("dt", {}, "calls"), el("dd", { class: "mono" }, chosen.calls.join(" · "))),
      el("h3", {}, "Left in place"), left);
  }
  choose.addEventListener("change", show);
  const violations = map.violations.length
    ? el("ul", { class: "error", id: "failure-violations" }, map.violations.map((v) =>
        el("li", {}, `${v.property}: ${v.message}`)))
    : null;
  document.getElementById("main").append(
    el("h2", {}, "Failure map"), violations, el("p", {}, choose), diagram, details);
  await show();
}

document.addEventListener("concordia:saga-page", (event) => {
  failureMap(event.detail.name, event.detail.version);
});
