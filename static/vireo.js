/* Vireo's browser glue: live updates over the websocket, selection, toolbar, right-click menu
   and the modal windows. Everything else is htmx attributes in the templates. */
(function () {
  "use strict";

  // ---- Live updates -------------------------------------------------------------------
  // Elements carry data-live="topic topic..." plus hx-get/hx-trigger="vireo:changed". The
  // event does not bubble: a row's change refreshes the row, never the table around it.
  let socket = null, subscribed = new Set(), retry = 500, sessionEnded = false;
  let frames = [];  // frames sent and not yet answered, oldest first
  const refused = new Set();  // topics the server refused: offered again after a grant
  const dot = () => document.getElementById("live-dot");
  const liveTopics = (el) => el.dataset.live.split(/\s+/).filter(Boolean);

  function topicsOnPage() {
    const topics = new Set();
    document.querySelectorAll("[data-live]").forEach(el => liveTopics(el).forEach(t => topics.add(t)));
    return topics;
  }

  // Follow what the page now shows and stop following what it no longer shows.
  function subscribeNew() {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    const onPage = topicsOnPage();
    const fresh = [...onPage].filter(t => !subscribed.has(t));
    const gone = [...subscribed].filter(t => !onPage.has(t));
    if (!fresh.length && !gone.length) return;
    fresh.forEach(t => subscribed.add(t));
    gone.forEach(t => subscribed.delete(t));
    const frame = {subscribe: fresh, unsubscribe: gone};
    frames.push(frame);
    socket.send(JSON.stringify(frame));
  }

  // Requests in flight, by the element that made them. An element is not refreshed while a
  // request of its own or of an element inside it (a card's button) is in flight: the swap
  // would orphan that request and lose its answer. It is refreshed once they end.
  const inFlight = new Map(), deferred = new Set();
  const busy = (el) => [...inFlight.keys()].some(e => el === e || el.contains(e));

  // Content htmx has swapped in but not yet processed (it does so when the swap settles, 20 ms
  // on) has no hx-trigger listener: a vireo:changed sent to it then would be lost. It waits
  // for its htmx:load.
  const unsettled = new Set();
  const unprocessed = (el) => !!el.closest("." + htmx.config.addedClass);

  function refresh(el) {
    if (busy(el)) { deferred.add(el); return; }
    if (unprocessed(el)) { unsettled.add(el); return; }
    el.dispatchEvent(new CustomEvent("vireo:changed", {bubbles: false}));
  }

  document.body.addEventListener("htmx:load", () => {
    [...unsettled].forEach(el => {
      if (el.isConnected && unprocessed(el)) return;
      unsettled.delete(el);
      const now = current(el);
      if (now) refresh(now);
    });
  });

  // The element now on the page in place of `el` (a swap replaces it).
  function current(el) {
    if (el.isConnected) return el;
    if (el.id) return document.getElementById(el.id);
    const get = el.getAttribute("hx-get");
    return [...document.querySelectorAll("[data-live]")].find(e =>
      e.dataset.live === el.dataset.live && e.getAttribute("hx-get") === get) || null;
  }

  document.body.addEventListener("htmx:beforeRequest", (e) => {
    inFlight.set(e.detail.elt, Date.now());
    e.detail.elt.addEventListener("htmx:beforeOnLoad", answerOfDetached, {once: true});
  });

  // An answer for a container elsewhere on the page (HX-Retarget: #messages, a window's OK)
  // whose asking element was swapped out meanwhile (a refresh of the pane around a button that
  // set off before the click): htmx would look for the container inside the detached element
  // and drop the answer with a targetError. Events of a detached element reach only listeners
  // on the element itself, hence one set on each request's element.
  function answerOfDetached(e) {
    const xhr = e.detail.xhr, retarget = xhr.getResponseHeader("HX-Retarget");
    if (!retarget || e.detail.elt.isConnected || xhr.status >= 300) return;
    const target = document.querySelector(retarget);
    if (!target) return;
    e.preventDefault();
    // eventInfo: the detail of the htmx:afterSwap and afterSettle events the swap sends
    htmx.swap(target, xhr.responseText, {swapStyle: xhr.getResponseHeader("HX-Reswap") || "innerHTML"},
      {eventInfo: {elt: target, target: target, xhr: xhr}});
    const after = xhr.getResponseHeader("HX-Trigger-After-Swap");
    if (after) Object.keys(JSON.parse(after)).forEach(name => document.body.dispatchEvent(new CustomEvent(name)));
  }
  document.body.addEventListener("htmx:afterRequest", (e) => {
    inFlight.delete(e.detail.elt);
    const now = Date.now();
    inFlight.forEach((since, elt) => {  // a request that never ended (cancelled, element gone)
      if (!elt.isConnected || now - since > 30000) inFlight.delete(elt);
    });
    [...deferred].forEach(el => {
      deferred.delete(el);
      const now = current(el);
      if (now) setTimeout(() => refresh(now), 0);  // after htmx has made the swap
    });
  });

  function changed(topic) {
    document.querySelectorAll("[data-live]").forEach(el => {
      if (liveTopics(el).includes(topic)) refresh(el);
    });
  }

  // The object behind `topic` was deleted (a removed VM): take its row, card and panes off the
  // page instead of asking for them (which would only answer 404).
  function gone(topic) {
    document.querySelectorAll("[data-live]").forEach(el => {
      if (!el.dataset.live.split(/\s+/).includes(topic)) return;
      if (el.id === "vm-details") {
        el.outerHTML = '<p class="hint">Select a virtual machine to see its details.</p>';
        history.replaceState(null, "", addressWithSelected(null));
      } else {
        el.remove();
      }
    });
    subscribed.delete(topic);
    document.dispatchEvent(new CustomEvent("vireo:gone", {detail: {topic}}));
  }

  function connect() {
    const path = document.body.dataset.ws;
    if (!path) return;
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + path);
    socket.onopen = () => {
      const reconnect = subscribed.size > 0 || sessionEnded;
      subscribed = new Set();
      refused.clear();
      frames = [];
      retry = 500;
      sessionEnded = false;
      dot() && dot().classList.add("on");
      subscribeNew();
      // Anything may have changed while we were away.
      if (reconnect) document.querySelectorAll("[data-live]").forEach(refresh);
    };
    socket.onmessage = (e) => {
      const msg = JSON.parse(e.data);
      (msg.refused || []).forEach(t => refused.add(t));
      if (msg.topic === "grants") {  // the user's permissions changed: they may follow more now
        refused.forEach(t => subscribed.delete(t));
        refused.clear();
        subscribeNew();
      }
      if (msg.topic && msg.gone) gone(msg.topic);
      else if (msg.topic) changed(msg.topic);
      const answered = ("subscribed" in msg || "unsubscribed" in msg || "error" in msg) && frames.shift();
      // Refused for sending too fast: take the frame back and send it again in a moment.
      if (msg.error && answered && !("subscribed" in msg)) {
        (answered.subscribe || []).forEach(t => subscribed.delete(t));
        (answered.unsubscribe || []).forEach(t => subscribed.add(t));
        setTimeout(subscribeNew, 1000);
      }
      // Something busy may have finished between rendering and subscribing: fetch it once more.
      if (msg.subscribed) {
        const fresh = new Set(msg.subscribed);
        document.querySelectorAll("[data-busy][data-live]").forEach(el => {
          if (liveTopics(el).some(t => fresh.has(t))) refresh(el);
        });
      }
      // A permission was taken away: show the page as the user may now see it.
      if (msg.revoked && msg.revoked.length) location.reload();
    };
    socket.onclose = (e) => {
      dot() && dot().classList.remove("on");
      if (e.code === 4401) {
        // The server ended the session's socket (logout, password change): try once more
        // with the cookie the browser now holds; if that is refused, the session is over.
        sessionEnded = true;
        setTimeout(connect, 1500);
        return;
      }
      if (sessionEnded) { location.reload(); return; }  // shows the login page
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
  }

  // ---- Selection, toolbar and right-click menu (Virtual Machines tab) -------------------
  let selected = [];
  let anchor = null;
  const results = () => document.getElementById("vm-results");
  const rows = () => [...document.querySelectorAll("#vm-table tr.vm-row")];

  function paint() {
    rows().forEach(r => r.classList.toggle("selected", selected.includes(r.dataset.vm)));
    const chosen = rows().filter(r => selected.includes(r.dataset.vm));
    document.querySelectorAll("#vm-toolbar button[data-action]").forEach(b => {
      b.disabled = !enabled(b.dataset.action, b.hasAttribute("data-single"), chosen);
    });
  }

  function enabled(action, single, chosen) {
    if (!chosen.length || (single && chosen.length !== 1)) return false;
    return chosen.every(r => r.dataset.actions.split(" ").includes(action));
  }

  function showDetails(id) {
    const box = results();
    if (!box) return;
    const url = box.dataset.detailUrl.replace("/0/", "/" + id + "/");
    htmx.ajax("GET", url, {target: "#details-pane", swap: "innerHTML"});
    history.replaceState(null, "", addressWithSelected(id));
  }

  // The address bar keeps the list's search, sort and page; only `selected` changes.
  function addressWithSelected(id) {
    const params = new URLSearchParams(location.search);
    if (id) params.set("selected", id); else params.delete("selected");
    const query = params.toString();
    return location.pathname + (query ? "?" + query : "");
  }

  function select(row, event) {
    const id = row.dataset.vm;
    if (event && (event.ctrlKey || event.metaKey)) {
      selected = selected.includes(id) ? selected.filter(x => x !== id) : [...selected, id];
    } else if (event && event.shiftKey && anchor) {
      const ids = rows().map(r => r.dataset.vm);
      const [a, b] = [ids.indexOf(anchor), ids.indexOf(id)].sort((x, y) => x - y);
      selected = ids.slice(a, b + 1);
    } else {
      selected = [id];
    }
    anchor = id;
    paint();
    if (selected.length === 1) showDetails(selected[0]);
  }

  function actionUrl(action) {
    const query = selected.map(id => "vm=" + encodeURIComponent(id)).join("&");
    return results().dataset.actionUrl.replace("ACTION", action) + "?" + query;
  }

  function perform(action, direct) {
    if (!selected.length) return;
    const button = document.querySelector(`#vm-toolbar button[data-action="${action}"]`);
    if (button && button.dataset.window) {  // its own page in a window of its own (Console)
      const id = selected[0];
      window.open(button.dataset.window.replace("/0/", "/" + id + "/"), "vireo-console-" + id);
      return;
    }
    if (direct) htmx.ajax("POST", actionUrl(action), {target: "#messages", swap: "innerHTML"});
    else htmx.ajax("GET", actionUrl(action), {target: "#modal-content", swap: "innerHTML"});
  }

  // The right-click menu offers what the toolbar offers, in its order: the page renders the
  // toolbar from the catalogue of actions (vms/actions.py), so there is no list here.
  function openMenu(x, y) {
    const menu = document.getElementById("context-menu");
    const chosen = rows().filter(r => selected.includes(r.dataset.vm));
    menu.innerHTML = "";
    document.querySelectorAll("#vm-toolbar button[data-action]").forEach(b => {
      const action = b.dataset.action, direct = b.hasAttribute("data-direct");
      const li = document.createElement("li");
      li.textContent = b.dataset.label;
      li.dataset.action = action;
      if (!enabled(action, b.hasAttribute("data-single"), chosen)) li.className = "disabled";
      else li.onclick = () => { closeMenu(); perform(action, direct); };
      menu.appendChild(li);
    });
    menu.style.left = x + "px";
    menu.style.top = y + "px";
    menu.hidden = false;
  }

  function closeMenu() { const m = document.getElementById("context-menu"); if (m) m.hidden = true; }

  document.addEventListener("click", (e) => {
    closeMenu();
    const button = e.target.closest("#vm-toolbar button[data-action]");
    if (button) { perform(button.dataset.action, button.hasAttribute("data-direct")); return; }
    if (e.target.closest("[data-close-modal]")) { closeModal(); return; }
    const row = e.target.closest("#vm-table tr.vm-row");
    if (row && !e.target.closest("a")) select(row, e);
  });
  document.addEventListener("contextmenu", (e) => {
    const row = e.target.closest("#vm-table tr.vm-row");
    if (!row) return;
    e.preventDefault();
    if (!selected.includes(row.dataset.vm)) select(row, null);
    openMenu(e.clientX, e.clientY);
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeMenu(); });

  // ---- Modal windows ------------------------------------------------------------------
  function closeModal() {
    const modal = document.getElementById("modal");
    if (modal && modal.open) modal.close();
    const content = document.getElementById("modal-content");
    if (content) content.innerHTML = "";
  }
  document.body.addEventListener("vireo:close-modal", closeModal);

  // Windows, messages and the details pane are containers: whatever hx-swap a button inherits
  // from the table it sits in (outerHTML for live rows), fill them, never replace them.
  const CONTAINERS = new Set(["modal-content", "messages", "details-pane"]);
  document.body.addEventListener("htmx:beforeSwap", (e) => {
    if (e.detail.target && CONTAINERS.has(e.detail.target.id)) e.detail.swapOverride = "innerHTML";
  });

  document.body.addEventListener("htmx:afterSwap", (e) => {
    if (!e.detail.target) return;
    if (e.detail.target.id === "modal-content" && e.detail.target.innerHTML.trim()) {
      const modal = document.getElementById("modal");
      if (!modal.open) modal.showModal();
      const first = modal.querySelector("input[type=text], input:not([type]), select");
      if (first) first.focus();
    }
    if (e.detail.target.id === "messages") {
      [...e.detail.target.children].forEach(m => setTimeout(() => m.remove(), 8000));
    }
  });
  // A live refresh says so (X-Vireo-Live), so that the server answers one for an object that is
  // gone (a VM removed while the refresh was on its way) with 204 and X-Vireo-Gone, not 404.
  const liveRefresh = (detail) => {
    const cause = detail.requestConfig ? detail.requestConfig.triggeringEvent : detail.triggeringEvent;
    return !!cause && cause.type === "vireo:changed";
  };
  // A live refresh that set off before a request of the user's (a click on a snapshot row
  // inside the pane) must not land after it with the older view: it is dropped and made again
  // from the element now on the page. userRequests counts the user's requests.
  let userRequests = 0;
  document.body.addEventListener("htmx:configRequest", (e) => {
    if (liveRefresh(e.detail)) {
      e.detail.headers["X-Vireo-Live"] = "1";
      e.detail.vireoUserRequests = userRequests;
    } else {
      userRequests += 1;
    }
  });
  document.body.addEventListener("htmx:beforeSwap", (e) => {
    const config = e.detail.requestConfig;
    if (!config || config.vireoUserRequests === undefined) return;
    if (config.vireoUserRequests === userRequests) return;
    e.detail.shouldSwap = false;
    const now = current(e.detail.elt);
    if (now) setTimeout(() => refresh(now), 0);
  });
  document.body.addEventListener("htmx:afterRequest", (e) => {
    const elt = e.detail.elt;
    if (!e.detail.xhr.getResponseHeader("X-Vireo-Gone") || !elt.isConnected) return;
    if (elt.matches("#vm-table tr.vm-row, #vm-details")) takeOff(elt);
  });
  // A live refresh answered 404 (an older server): the object is gone. Take its row or details
  // off the page quietly; an error message would only confuse whoever removed it.
  document.body.addEventListener("htmx:beforeSwap", (e) => {
    const elt = e.detail.elt;
    if (e.detail.xhr.status !== 404 || !liveRefresh(e.detail)) return;
    if (!elt.matches("#vm-table tr.vm-row, #vm-details")) return;
    e.detail.shouldSwap = false;
    e.detail.isError = false;
    takeOff(elt);
  });
  function takeOff(elt) {
    selected = selected.filter(id => id !== elt.dataset.vm);
    if (elt.id === "vm-details") {
      elt.outerHTML = '<p class="hint">Select a virtual machine to see its details.</p>';
      history.replaceState(null, "", addressWithSelected(null));
    } else {
      elt.remove();
    }
    paint();
  }
  document.body.addEventListener("htmx:afterSettle", () => { paint(); subscribeNew(); });
  document.addEventListener("vireo:gone", (e) => {
    const id = e.detail.topic.replace(/^vm\./, "");
    selected = selected.filter(x => x !== id);
    paint();
  });
  document.body.addEventListener("htmx:responseError", (e) => {
    const box = document.getElementById("messages");
    const status = e.detail.xhr.status;
    const text = status === 404 ? "That object does not exist or is out of your reach."
      : status === 403 ? "Refused: your session may have expired; reload the page." : "The request failed (" + status + ").";
    box.insertAdjacentHTML("beforeend", '<div class="msg error" role="status"></div>');
    box.lastChild.textContent = text;
  });

  // ---- Enter in a window's search box searches (clicks its Go button), never submits ----
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || !e.target.matches || !e.target.matches("input[data-enter-clicks]")) return;
    e.preventDefault();
    const scope = e.target.form || document;
    const go = scope.querySelector('[data-enter-target="' + e.target.dataset.enterClicks + '"]');
    if (go) go.click();
  });

  document.addEventListener("DOMContentLoaded", () => {
    const details = document.getElementById("vm-details");
    if (details) selected = [details.dataset.vm];
    paint();
    connect();
    document.querySelectorAll("#messages .msg").forEach(m => setTimeout(() => m.remove(), 8000));
  });
})();
