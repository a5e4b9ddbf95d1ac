/* Vireo: the Upload Image window of an ISO domain (templates/storage/_image_upload_dialog.html).
   The file is sent in chunks (a slice of the File each, never read whole): the window starts
   (or resumes) the upload with the file's name and size, sends each chunk at the offset the
   server has staged, then follows the job that writes the image into the pool until it ends.
   Closing the window stops the transfer; uploading the same file again resumes it. */
(function () {
  "use strict";

  function csrfHeaders() {
    try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}"); } catch (e) { return {}; }
  }

  async function answer(response) {
    let body = {};
    try { body = await response.json(); } catch (e) { body = {}; }
    if (!response.ok) throw new Error(body.error || `The server answered ${response.status}.`);
    return body;
  }

  function mib(n) { return (n / 1048576).toFixed(1) + " MiB"; }

  async function upload(form) {
    const input = form.querySelector("input[type=file]");
    const error = form.querySelector("[data-upload-error]");
    const progress = form.querySelector("[data-upload-progress]");
    const bar = progress.querySelector(".bar");
    const step = form.querySelector("[data-upload-step]");
    const button = form.querySelector("[data-upload-start]");
    const show = (percent, text) => {
      progress.hidden = false;
      bar.style.width = `${Math.max(0, Math.min(100, percent))}%`;
      step.textContent = text;
    };
    error.hidden = true;
    const file = input.files && input.files[0];
    if (!file) { error.textContent = "Choose an ISO file to upload."; error.hidden = false; return; }
    let sent = null;  // bytes the server has staged, once the upload has started
    const controller = new AbortController();
    form._uploadAbort = controller;
    button.disabled = true;
    input.disabled = true;
    try {
      const start = new FormData();
      start.append("name", file.name);
      start.append("size", String(file.size));
      if (form.querySelector("input[name=guest_tools]").checked) start.append("guest_tools", "on");
      let state = await answer(await fetch(form.dataset.isoUpload, {
        method: "POST", body: start, headers: csrfHeaders(), signal: controller.signal,
      }));
      const chunk = parseInt(form.dataset.chunkBytes, 10) || 8388608;
      let offset = state.offset;
      sent = offset;
      if (offset > 0) show(100 * offset / file.size, `Resuming at ${mib(offset)}`);
      while (offset < file.size) {
        const piece = file.slice(offset, Math.min(offset + chunk, file.size));
        const url = `${state.chunk_url}?offset=${offset}&upload=${encodeURIComponent(state.upload_id)}`;
        state = await answer(await fetch(url, {
          method: "POST", body: piece, signal: controller.signal,
          headers: Object.assign({"Content-Type": "application/octet-stream"}, csrfHeaders()),
        }));
        offset = sent = state.offset;
        show(50 * offset / file.size, `Sending ${file.name}: ${mib(offset)} of ${mib(file.size)}`);
      }
      // Every byte is on the server: follow the job that writes the image into the pool.
      for (;;) {
        if (state.job) {
          show(50 + state.job.progress / 2, state.job.step || "Writing the image to the pool");
          if (state.job.status === "failed") throw new Error(state.job.error || "The upload failed.");
        }
        if (state.status === "ok") { show(100, `${file.name} was uploaded.`); break; }
        await new Promise((resolve) => setTimeout(resolve, 1000));
        const response = await fetch(state.state_url, {signal: controller.signal});
        if (response.status === 404) {
          throw new Error(`The upload of ${file.name} failed: see Events for the host's message.`);
        }
        state = await answer(response);
      }
      document.body.dispatchEvent(new CustomEvent("vireo:uploaded", {detail: {name: file.name}}));
      button.textContent = "Done";
      button.disabled = false;
    } catch (e) {
      if (e.name === "AbortError") return;
      // A network failure (fetch's TypeError) mid-transfer: what was sent stays staged.
      const lost = e instanceof TypeError && sent !== null && sent < file.size;
      error.textContent = lost
        ? `The transfer was interrupted at ${mib(sent)} of ${mib(file.size)}. ` +
          "Upload the same file again to resume from there."
        : e.message;
      error.hidden = false;
      button.disabled = false;
      input.disabled = false;
    } finally {
      form._uploadAbort = null;
    }
  }

  document.addEventListener("submit", (e) => {
    const form = e.target.closest("form[data-iso-upload]");
    if (!form) return;
    e.preventDefault();
    const button = form.querySelector("[data-upload-start]");
    if (button.textContent === "Done") { document.body.dispatchEvent(new Event("vireo:close-modal")); return; }
    upload(form);
  });
  // Another file chosen: the last one's error and bar go.
  document.addEventListener("change", (e) => {
    const form = e.target.closest("form[data-iso-upload]");
    if (!form || e.target.type !== "file") return;
    form.querySelector("[data-upload-error]").hidden = true;
    form.querySelector("[data-upload-progress]").hidden = true;
  });
  // Closing the window stops the transfer (what was sent stays staged, to be resumed).
  document.addEventListener("click", (e) => {
    if (!e.target.closest("[data-close-modal]")) return;
    const form = document.querySelector("form[data-iso-upload]");
    if (form && form._uploadAbort) form._uploadAbort.abort();
  }, true);
})();
