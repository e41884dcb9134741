// Asks before a form marked data-confirm is sent (the "all that match" actions).
// A file, not an inline handler: the Content-Security-Policy allows no inline script.
document.addEventListener("submit", function (event) {
  var question = event.target.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
