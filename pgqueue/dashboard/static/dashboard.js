// pgqueue dashboard: the little it needs, and nothing from elsewhere.
// - [data-refresh]: fetched again every data-seconds (while the tab is visible) and swapped
//   in place, so the numbers and charts stay live without a page reload.
// - [data-confirm] buttons ask before their form is sent.
// - [data-select-all] checks or unchecks every checkbox of that name in its form.
"use strict";

(function () {
  function refresh(box) {
    var url = box.getAttribute("data-refresh");
    var seconds = Number(box.getAttribute("data-seconds")) || 5;
    var busy = false;
    function tick() {
      if (busy || document.hidden || document.activeElement && box.contains(document.activeElement) && document.activeElement.tagName !== "BODY" && document.activeElement.tagName !== "A") {
        return;
      }
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (response.redirected || !response.ok) {
            box.classList.add("stale");
            return null;
          }
          return response.text();
        })
        .then(function (html) {
          if (html !== null) {
            box.innerHTML = html;
            box.classList.remove("stale");
            box.setAttribute("data-updated", String(Date.now()));
          }
        })
        .catch(function () { box.classList.add("stale"); })
        .then(function () { busy = false; });
    }
    window.setInterval(tick, seconds * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(refresh);
  });

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (!(target instanceof Element)) { return; }
    var button = target.closest("button[data-confirm]");
    if (button && !window.confirm(button.getAttribute("data-confirm"))) {
      event.preventDefault();
    }
  });

  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!(box instanceof HTMLInputElement) || !box.hasAttribute("data-select-all")) { return; }
    var name = box.getAttribute("data-select-all");
    box.form.querySelectorAll("input[type=checkbox][name='" + name + "']").forEach(function (c) {
      c.checked = box.checked;
    });
  });
})();
