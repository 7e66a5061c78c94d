// aegrade bedside form: live ICE/CAPD item scores and totals, the tool that applies, the flow field,
// the °C of a °F, Enter that does not submit from a number field, copy to notes, local times, and
// the sticky bars kept off the focused field. Small and dependency-free; the form works the same
// without it (plain POST). Its words come from the page (data-i18n-* attributes), already translated.
(function () {
  "use strict";
  var form = document.querySelector("form[data-capd-age]");
  if (!form) return;
  var capdAge = parseFloat(form.getAttribute("data-capd-age"));
  var flowDevices = (form.getAttribute("data-flow-devices") || "").split(" ");
  function el(id) { return document.getElementById(id); }
  function words(key, values) {
    var text = form.getAttribute("data-i18n-" + key) || "";
    Object.keys(values || {}).forEach(function (k) { text = text.split("{" + k + "}").join(values[k]); });
    return text;
  }
  // the value of a field: a checked radio's, or an input's / select's
  function value(name) {
    var checked = form.querySelector('input[type=radio][name="' + name + '"]:checked');
    if (checked) return checked.value;
    var input = el(name);
    return input && input.value !== undefined && input.type !== "radio" ? input.value : "";
  }

  var ice = ["orientation", "naming", "commands", "writing", "attention"];
  var capd = ["0", "1", "2", "3", "4", "5", "6", "7"];
  function total(prefix, names, out, max) {
    var sum = 0, done = 0;
    names.forEach(function (n) {
      var v = value(prefix + n);
      var score = el(prefix + n + "-score");
      if (score) score.textContent = v === "" ? "" : words("item-score", { score: v });
      if (v !== "") { sum += parseInt(v, 10); done += 1; }
    });
    out.textContent = done === 0 ? "" : done === names.length
      ? words("total", { sum: sum, max: max })
      : words("partial", { done: done, count: names.length });
  }
  function totals() {
    total("neuro.ice.", ice, el("ice-total"), 10);
    total("neuro.capd.", capd, el("capd-total"), 32);
  }
  function hasValues(prefix, names) {
    return names.some(function (n) { return value(prefix + n) !== ""; });
  }

  // Show the tool that applies once the age is known; both while it is not.
  function tool() {
    var years = parseFloat((el("patient.age_years").value || "").replace(",", "."));
    var months = parseFloat(el("patient.age_months").value || "");
    var age = isNaN(years) ? (isNaN(months) ? NaN : months / 12) : years + (isNaN(months) ? 0 : months / 12);
    var delay = el("patient.developmental_delay").checked;
    var known = !isNaN(age) || delay;
    var useCapd = delay || age < capdAge;
    el("neuro.ice").hidden = known && useCapd && !hasValues("neuro.ice.", ice);
    el("neuro.capd").hidden = known && !useCapd && !hasValues("neuro.capd.", capd);
  }

  function flow() {
    var device = el("crs.oxygen.device").value;
    var wrap = document.querySelector('[data-field="crs.oxygen.flow_l_min"]');
    wrap.hidden = device !== "" && flowDevices.indexOf(device) < 0 && el("crs.oxygen.flow_l_min").value === "";
  }

  // °F is shown with its °C (the grade is computed from the °F by the engine, as typed)
  function unit() {
    var f = value("vitals.temperature_unit") === "f";
    var input = el("vitals.temperature");
    input.setAttribute("placeholder", words(f ? "placeholder-f" : "placeholder-c"));
    var typed = parseFloat((input.value || "").replace(",", "."));
    el("temperature-celsius").textContent = f && !isNaN(typed) ? words("celsius", { celsius: ((typed - 32) * 5 / 9).toFixed(1) }) : "";
  }

  function update() { totals(); tool(); flow(); unit(); }
  form.addEventListener("input", update);
  form.addEventListener("change", update);
  update();

  // Enter in a number field moves on instead of sending a half-filled assessment to the record
  form.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.key !== "Enter" || !target || target.tagName !== "INPUT" || target.type !== "text") return;
    event.preventDefault();
    var fields = Array.prototype.slice.call(form.querySelectorAll("input[type=text]")).filter(function (e) { return e.offsetParent !== null; });
    var next = fields[fields.indexOf(target) + 1];
    if (next) next.focus();
  });

  // the sticky summary bar and button bar never cover the focused field (WCAG 2.2 SC 2.4.11)
  var summary = el("summary"), submit = el("submit-row");
  function bars() {
    var root = document.documentElement.style;
    root.setProperty("--summary-h", (summary ? summary.offsetHeight : 0) + "px");
    root.setProperty("--submit-h", (submit ? submit.offsetHeight : 0) + "px");
  }
  bars();
  window.addEventListener("resize", bars);
  document.addEventListener("focusin", function (event) {
    var target = event.target;
    if (!target || !target.getBoundingClientRect || target === summary) return;
    var box = target.getBoundingClientRect();
    var top = summary ? summary.getBoundingClientRect().bottom : 0;
    var bottom = submit ? submit.getBoundingClientRect().top : window.innerHeight;
    if (target.closest && (target.closest("#summary") || target.closest("#submit-row"))) return;
    if (box.bottom > bottom) window.scrollBy(0, box.bottom - bottom + 8);
    else if (box.top < top) window.scrollBy(0, box.top - top - 8);
  });

  // times: the server writes UTC; shown here in the device's time zone, with the zone
  var lang = document.documentElement.lang || undefined;
  document.querySelectorAll("time[data-local]").forEach(function (t) {
    var when = new Date(t.getAttribute("datetime"));
    if (isNaN(when.getTime())) return;
    try {
      t.textContent = new Intl.DateTimeFormat(lang, {
        year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short"
      }).format(when);
    } catch (e) { /* keep the UTC text */ }
  });

  // copy to notes: the note is on the page already (rendered by the server); this copies it
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var source = el(button.getAttribute("data-copy"));
      var status = el("copy-status");
      function done(ok) { if (status) status.textContent = words(ok ? "copied" : "copy-failed"); }
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(source.value).then(function () { done(true); }, function () { done(false); });
      } else {
        source.closest("details").open = true;
        source.select();
        done(document.execCommand && document.execCommand("copy"));
      }
    });
  });
  document.querySelectorAll("[data-print]").forEach(function (b) {
    b.hidden = false;
    b.addEventListener("click", function () { window.print(); });
  });
  var landing = el("error-summary") || el("summary") || el("result");
  if (landing) landing.focus({ preventScroll: landing.id === "summary" });
})();
