// Case page upload: drag-and-drop onto the form, and a bar for the bytes being sent
// (the server's progress bar then counts cells classified).
(() => {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) return;
  const input = document.getElementById("files");
  const bar = document.getElementById("send-progress");
  const text = document.getElementById("send-text");
  ["dragenter", "dragover"].forEach((type) => form.addEventListener(type, (e) => {
    e.preventDefault();
    form.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => form.addEventListener(type, () => form.classList.remove("over")));
  form.addEventListener("drop", (e) => {
    e.preventDefault();
    if (!e.dataTransfer.files.length) return;
    input.files = e.dataTransfer.files;
    htmx.trigger(form, "submit");
  });
  form.addEventListener("htmx:xhr:progress", (e) => {
    if (!e.detail.lengthComputable) return;
    bar.hidden = false;
    bar.value = (100 * e.detail.loaded) / e.detail.total;
    text.textContent = e.detail.loaded < e.detail.total ? "sending " + Math.round(bar.value) + " %" : "checking files…";
  });
  form.addEventListener("htmx:afterRequest", () => {
    bar.hidden = true;
    text.textContent = "";
    form.reset();
  });
})();
