// The review queue: decide in place (fetch, no reload) and keyboard shortcuts.
//   a accept · r reject (with the item's reason) · j / n next · k / p previous · Esc leave a field
// Without JavaScript the forms post and the server redirects back to the queue.
(function () {
  "use strict";
  var items = Array.prototype.slice.call(document.querySelectorAll(".review-item"));
  var reviewer = document.getElementById("reviewer");
  var status = document.getElementById("status");
  var current = -1;
  var STORE = "lesiondb.reviewer";

  function say(text, bad) {
    status.hidden = false;
    status.textContent = text;
    status.className = "flash" + (bad ? " bad" : "");
  }

  if (reviewer) {
    try {
      var saved = window.localStorage.getItem(STORE);
      if (saved) { reviewer.value = saved; }
    } catch (e) { /* storage off: the server's default reviewer stays */ }
    var sync = function () {
      document.querySelectorAll("input.by").forEach(function (el) { el.value = reviewer.value; });
      try { window.localStorage.setItem(STORE, reviewer.value); } catch (e) { /* ignore */ }
    };
    reviewer.addEventListener("input", sync);
    sync();
  }

  function pending(i) { return items[i] && !items[i].classList.contains("decided"); }

  function select(i) {
    if (i < 0 || i >= items.length) { return; }
    if (current >= 0 && items[current]) { items[current].classList.remove("current"); }
    current = i;
    items[i].classList.add("current");
    items[i].scrollIntoView({block: "nearest"});
  }

  function step(dir, onlyPending) {
    for (var i = current + dir; i >= 0 && i < items.length; i += dir) {
      if (!onlyPending || pending(i)) { select(i); return true; }
    }
    return false;
  }

  function decide(item, action) {
    if (!item || item.classList.contains("decided") || item.classList.contains("busy")) { return; }
    var form = item.querySelector("form.decide");
    var base = form.getAttribute("action").replace(/\/accept$/, "");
    var body = new URLSearchParams(new FormData(form));
    if (reviewer) { body.set("by", reviewer.value); }
    if (!(body.get("by") || "").trim()) {
      say("Enter your name as reviewer first (top right).", true);
      if (reviewer) { reviewer.focus(); }
      return;
    }
    item.classList.add("busy");
    fetch(base + "/" + action, {
      method: "POST",
      headers: {"Accept": "application/json", "X-Lesiondb-Token": body.get("token")},
      body: body
    }).then(function (res) {
      return res.json().then(function (data) { return {ok: res.ok, data: data}; });
    }).then(function (r) {
      item.classList.remove("busy");
      if (!r.ok) { say(r.data.error || "not done", true); return; }
      var done = r.data.status || action + "ed";
      item.classList.add("decided", done);
      item.querySelector(".state").textContent = done + (r.data.lesionId ? " → lesion " + r.data.lesionId : "");
      item.querySelectorAll("button, input.reason").forEach(function (el) { el.disabled = true; });
      say((item.dataset.kind === "link" ? "Link " : "Proposal ") + item.dataset.id + " " + done + ".");
      if (items.indexOf(item) === current) { step(1, true); }
    }).catch(function (err) {
      item.classList.remove("busy");
      say("Could not reach the server: " + err, true);
    });
  }

  items.forEach(function (item, i) {
    item.addEventListener("click", function () { if (current !== i) { select(i); } });
    item.querySelector("form.decide").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var btn = ev.submitter;
      decide(item, btn && btn.classList.contains("reject") ? "reject" : "accept");
    });
  });

  document.addEventListener("keydown", function (ev) {
    var t = ev.target;
    var typing = t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA");
    if (typing) {
      if (ev.key === "Escape") { t.blur(); }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    switch (ev.key) {
      case "a": decide(items[current], "accept"); break;
      case "r": decide(items[current], "reject"); break;
      case "j": case "n": step(1, false); break;
      case "k": case "p": step(-1, false); break;
      default: return;
    }
    ev.preventDefault();
  });

  // start at the item named in the address (#item-…), else the first pending one
  var start = window.location.hash ? items.findIndex(function (el) { return "#" + el.id === window.location.hash; }) : -1;
  if (start >= 0) { select(start); } else { current = -1; step(1, true); }
})();
