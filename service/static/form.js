// aegrade bedside form: live ICE/CAPD totals, the tool that applies, the flow field, the temperature
// unit. Small and dependency-free; the form works the same without it (plain POST).
(function () {
  "use strict";
  var form = document.querySelector("form[data-capd-age]");
  if (!form) return;
  var capdAge = parseFloat(form.getAttribute("data-capd-age"));
  var flowDevices = (form.getAttribute("data-flow-devices") || "").split(" ");
  function el(id) { return document.getElementById(id); }

  function total(prefix, names, out, max) {
    var sum = 0, done = 0;
    names.forEach(function (n) {
      var v = el(prefix + n).value;
      if (v !== "") { sum += parseInt(v, 10); done += 1; }
    });
    out.textContent = done === 0 ? "" : done === names.length ? "Total " + sum + " / " + max : done + " of " + names.length + " scored";
  }
  var ice = ["orientation", "naming", "commands", "writing", "attention"];
  var capd = ["0", "1", "2", "3", "4", "5", "6", "7"];
  function totals() {
    total("neuro.ice.", ice, el("ice-total"), 10);
    total("neuro.capd.", capd, el("capd-total"), 32);
  }

  // Show the tool that applies once the age is known; both while it is not.
  function tool() {
    var age = parseFloat((el("patient.age_years").value || "").replace(",", "."));
    var delay = el("patient.developmental_delay").checked;
    var known = !isNaN(age) || delay;
    var useCapd = delay || age < capdAge;
    el("neuro.ice").hidden = known && useCapd && !hasValues("neuro.ice.", ice);
    el("neuro.capd").hidden = known && !useCapd && !hasValues("neuro.capd.", capd);
  }
  function hasValues(prefix, names) {
    return names.some(function (n) { return el(prefix + n).value !== ""; });
  }

  function flow() {
    var device = el("crs.oxygen.device").value;
    var wrap = document.querySelector('[data-field="crs.oxygen.flow_l_min"]');
    wrap.hidden = device !== "" && flowDevices.indexOf(device) < 0 && el("crs.oxygen.flow_l_min").value === "";
  }

  function unit() {
    var f = el("vitals.temperature_unit").value === "f";
    el("vitals.temperature").setAttribute("placeholder", f ? "e.g. 101.3 (°F)" : "e.g. 38.5 (°C)");
  }

  form.addEventListener("input", function () { totals(); tool(); flow(); unit(); });
  form.addEventListener("change", function () { totals(); tool(); flow(); unit(); });
  totals(); tool(); flow(); unit();

  document.querySelectorAll("[data-print]").forEach(function (b) {
    b.addEventListener("click", function () { window.print(); });
  });
  var landing = el("error-summary") || el("result");
  if (landing) landing.focus();
})();
