// The console window: opens the console's websocket, hands it its one-time ticket, then gives
// the socket to noVNC (from the npm registry, served under static/vendor/novnc) with the
// ticket's graphics password. Buttons: Send Ctrl+Alt+Del, Full Screen, Disconnect.
const screen = document.getElementById("console-screen");
const status = document.getElementById("console-status");
const cad = document.getElementById("console-cad");
const fullscreen = document.getElementById("console-fullscreen");
const disconnect = document.getElementById("console-disconnect");

function say(text, kind) {
  status.textContent = text;
  status.className = "console-status" + (kind ? " " + kind : "");
}

// The close codes of the console's websocket (portal/shell/console_consumer.py).
const CLOSED = {
  4401: "Your session ended: sign in again.",
  4403: "The console was refused.",
  4404: "Not found.",
  4409: "Another user took over this console.",
};

async function start() {
  if (!screen) return;
  const { default: RFB } = await import(screen.dataset.rfb);
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const socket = new WebSocket(scheme + location.host + screen.dataset.ws);
  socket.binaryType = "arraybuffer";
  let rfb = null;
  let reason = "";

  socket.onopen = () => socket.send(JSON.stringify({ ticket: screen.dataset.ticket }));
  // Why the console ended: once noVNC reads the socket, the portal says it in the close frame.
  socket.addEventListener("close", (e) => {
    if (!reason && CLOSED[e.code]) reason = e.reason || CLOSED[e.code];
    if (!rfb) say(reason || "The console closed.", "bad");
  });
  socket.onmessage = (e) => {
    if (typeof e.data !== "string") return;
    const answer = JSON.parse(e.data);
    if (answer.error) { reason = answer.error; say(reason, "bad"); return; }
    if (!answer.ok) return;
    // The ticket was taken: from here on the socket carries RFB, and noVNC reads it.
    try {
      rfb = new RFB(screen, socket, { credentials: { password: screen.dataset.password } });
    } catch (err) {
      say("The console could not start: " + err.message, "bad");
      socket.close();
      return;
    }
    rfb.scaleViewport = true;
    rfb.focusOnClick = true;
    say("Connecting to the VM's display…");
    rfb.addEventListener("connect", () => {
      say("Connected", "good");
      cad.disabled = disconnect.disabled = false;
      screen.dataset.connected = "1";
      rfb.focus();
    });
    rfb.addEventListener("disconnect", (ev) => {
      cad.disabled = disconnect.disabled = true;
      delete screen.dataset.connected;
      say(reason || (ev.detail.clean ? "Disconnected." : "The console connection was lost."),
        ev.detail.clean && !reason ? "" : "bad");
    });
    rfb.addEventListener("credentialsrequired", () => {
      say("The VM's display refused the ticket's password: open the console again.", "bad");
      rfb.disconnect();
    });
    rfb.addEventListener("securityfailure", (ev) => {
      reason = "The VM's display refused the ticket: " + (ev.detail.reason || "open the console again.");
    });
    rfb.addEventListener("desktopname", (ev) => { document.title = ev.detail.name + " · Console"; });
    cad.onclick = () => { rfb.sendCtrlAltDel(); rfb.focus(); };
    disconnect.onclick = () => { reason = "Disconnected."; rfb.disconnect(); };
  };
}

fullscreen.onclick = () => {
  if (document.fullscreenElement) document.exitFullscreen();
  else (screen || document.body).requestFullscreen();
};

start().catch((err) => say("The console could not start: " + err, "bad"));
