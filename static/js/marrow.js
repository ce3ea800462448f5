// Every page: forms with data-confirm ask first (the message is an attribute, never inline script).
document.addEventListener("submit", (e) => {
  const message = e.target.dataset.confirm;
  if (message && !window.confirm(message)) e.preventDefault();
});
