// The review page: keyboard-first answers, one frame or a whole burst, sent with the
// session's CSRF token. The server is the judge: a refused answer changes nothing here.
(() => {
  "use strict";
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const who = document.getElementById("who");
  const status = document.getElementById("status");
  const form = document.getElementById("label-form");
  const input = document.getElementById("label-input");
  const KEYS = { a: "accept", l: "label", e: "empty", p: "person", v: "vehicle" };
  let current = null;
  let busy = false;
  let labelFor = null; // [ids] waiting for a typed label

  who.value = localStorage.getItem("edge-review-who") || "";
  who.addEventListener("change", () => localStorage.setItem("edge-review-who", who.value.trim()));

  const frames = () => [...document.querySelectorAll("article.frame")];
  const open = (el) => !el.classList.contains("answered");

  function say(text, bad) {
    status.textContent = text;
    status.className = bad ? "bad" : "";
  }

  function select(el) {
    if (!el) return;
    if (current) current.classList.remove("current");
    current = el;
    el.classList.add("current");
    el.scrollIntoView({ block: "nearest" });
  }

  function step(by) {
    const all = frames();
    const i = all.indexOf(current);
    select(all[Math.min(all.length - 1, Math.max(0, i + by))]);
  }

  function nextOpen() {
    const all = frames();
    const i = all.indexOf(current);
    select(all.slice(i + 1).find(open) || all.find(open) || current);
  }

  function idsOf(el, burst) {
    if (!burst) return [Number(el.dataset.id)];
    return frames().filter((f) => f.dataset.burst === el.dataset.burst && open(f))
      .map((f) => Number(f.dataset.id));
  }

  async function send(ids, kind, label) {
    if (busy || !ids.length) return;
    busy = true;
    try {
      const res = await fetch("/api/answer", {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json", "x-csrf-token": csrf },
        body: JSON.stringify({ frames: ids, answer: kind, label: label || null,
                               who: who.value.trim() || null }),
      });
      const data = await res.json().catch(() => ({}));
      if (!res.ok) {
        const why = typeof data.detail === "string" ? data.detail
          : data.detail ? JSON.stringify(data.detail) : res.statusText;
        say(`refused (${res.status}): ${why}`, true);
        return;
      }
      for (const a of data.applied) {
        const el = document.getElementById(`f${a.frame_id}`);
        if (!el) continue;
        el.classList.add("answered");
        el.dataset.answer = a.answer;
        el.querySelector(".result").textContent =
          `→ ${a.decision}${a.label ? ": " + a.label : ""} (${a.dest})`;
      }
      document.getElementById("left").textContent = data.waiting;
      say(`${data.applied.length} frame(s) answered; ${data.waiting} waiting`);
      nextOpen();
    } catch (err) {
      say(`not sent: ${err}`, true);
    } finally {
      busy = false;
    }
  }

  function ask(ids) {
    if (!ids.length) return;
    labelFor = ids;
    document.getElementById("label-for").textContent =
      ids.length > 1 ? `${ids.length} frames` : current.querySelector("h3").textContent;
    input.value = "";
    form.hidden = false;
    input.focus();
  }

  function closeForm() {
    form.hidden = true;
    labelFor = null;
    input.blur();
  }

  function act(el, kind, burst) {
    if (!el || (!burst && !open(el))) return;
    select(el);
    const ids = idsOf(el, burst);
    if (kind === "label") ask(ids);
    else send(ids, kind);
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const ids = labelFor;
    const text = input.value.trim();
    closeForm();
    if (ids && text) send(ids, "label", text);
  });
  document.getElementById("label-cancel").addEventListener("click", closeForm);
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") { ev.preventDefault(); closeForm(); }
  });

  document.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const key = ev.key.toLowerCase();
    if (key in KEYS) {
      ev.preventDefault();
      act(current, KEYS[key], ev.shiftKey);
    } else if (key === "s" || key === "arrowright" || key === "arrowdown" || key === "j") {
      ev.preventDefault();
      step(1);
    } else if (key === "arrowleft" || key === "arrowup" || key === "k") {
      ev.preventDefault();
      step(-1);
    }
  });

  document.addEventListener("click", (ev) => {
    const b = ev.target.closest("button");
    if (!b) return;
    if (b.dataset.one) act(b.closest("article.frame"), b.dataset.one, false);
    else if (b.dataset.all) {
      const burst = b.closest(".burst");
      act(burst.querySelector("article.frame:not(.answered)"), b.dataset.all, true);
    } else if (b.hasAttribute("data-skip")) {
      select(b.closest("article.frame"));
      step(1);
    }
  });

  select(frames().find(open));
  document.body.dataset.ready = "1";
})();
