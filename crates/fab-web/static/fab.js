// fab's only script: asks before submitting forms marked data-confirm (deleting, disabling).
// Loaded from the app's own origin, so the default Content-Security-Policy allows it without
// 'unsafe-inline'; pages carry no inline handlers.
"use strict";
document.addEventListener("submit", (event) => {
  const message = event.target instanceof HTMLFormElement ? event.target.dataset.confirm : undefined;
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
});
