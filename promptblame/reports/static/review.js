// Keyboard shortcuts of the review page: a key picks a choice or presses a button of the
// label form. No data from the page is read or sent by this script beyond the form itself.
(function () {
  "use strict";
  var form = document.getElementById("label-form");
  if (!form) { return; }
  function press(action) {
    var b = form.querySelector('button[name="action"][value="' + action + '"]');
    if (b) { sent = true; b.click(); }
  }
  function complete() {
    var sets = form.querySelectorAll('fieldset[data-required="1"]');
    for (var i = 0; i < sets.length; i++) {
      var radios = sets[i].querySelectorAll('input[type="radio"]');
      if (radios.length) {
        if (!sets[i].querySelector('input[type="radio"]:checked')) { return false; }
      } else {
        var n = sets[i].querySelector('input[type="number"]');
        if (n && (n.value === "" || !n.checkValidity())) { return false; }
      }
    }
    return true;
  }
  var sent = false;
  document.addEventListener("keydown", function (ev) {
    if (sent || ev.ctrlKey && ev.key !== "Enter" || ev.metaKey || ev.altKey) { return; }
    var t = ev.target;
    var typing = t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type !== "radio"));
    if (typing) {
      if (ev.key === "Escape") { t.blur(); }
      if (ev.key === "Enter" && (ev.ctrlKey || t.tagName === "INPUT")) {
        ev.preventDefault(); if (complete()) { press("label"); }
      }
      return;
    }
    var k = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
    var radios = form.querySelectorAll("input[data-key]");
    for (var i = 0; i < radios.length; i++) {
      if (radios[i].getAttribute("data-key") === k) {
        ev.preventDefault();
        radios[i].checked = true;
        if (complete()) { press("label"); }
        return;
      }
    }
    if (k === "Enter") { ev.preventDefault(); if (complete()) { press("label"); } }
    else if (k === "s") { ev.preventDefault(); press("skip"); }
    else if (k === "u") { ev.preventDefault(); press("undo"); }
    else if (k === "c") { ev.preventDefault(); var c = form.querySelector("textarea"); if (c) { c.focus(); } }
  });
})();
