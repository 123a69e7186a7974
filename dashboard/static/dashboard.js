// The dashboard's only script: "select all" on the dead letters page and
// the live tail. It inserts text with textContent, never as markup.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll("input.select").forEach(function (box) { box.checked = all.checked; });
    });
  }
  var reason = document.getElementById("reason");
  if (reason && reason.form) {
    reason.addEventListener("change", function () { reason.form.submit(); });
  }
  var tail = document.getElementById("tail");
  if (tail) {
    follow(tail);
  }
});

// follow shows the entries of the page's event stream as rows, newest
// first, keeping the last 500.
function follow(tail) {
  var rows = document.getElementById("tail-rows");
  var status = document.getElementById("tail-status");
  var src = new EventSource(tail.dataset.events);
  src.addEventListener("open", function () { status.textContent = "following"; });
  src.addEventListener("error", function () { status.textContent = "disconnected; retrying…"; });
  src.addEventListener("failure", function (ev) {
    status.textContent = "stopped: " + JSON.parse(ev.data).error;
  });
  src.addEventListener("entry", function (ev) {
    var e = JSON.parse(ev.data);
    var tr = document.createElement("tr");
    tr.className = "row";
    var ref = document.createElement("td");
    ref.className = "mono";
    var a = document.createElement("a");
    if (typeof e.href === "string" && e.href.charAt(0) === "/" && e.href.charAt(1) !== "/") {
      a.href = e.href;
    }
    a.textContent = e.ref;
    ref.appendChild(a);
    tr.appendChild(ref);
    [e.op, e.task, e.outcome, e.fields].forEach(function (text, i) {
      var td = document.createElement("td");
      td.className = i < 2 ? "mono" : "";
      td.textContent = text;
      tr.appendChild(td);
    });
    rows.insertBefore(tr, rows.firstChild);
    while (rows.children.length > 500) {
      rows.removeChild(rows.lastChild);
    }
  });
}
