// Keyboard shortcuts on a proposal's decision page: a approve, A approve and next, r reject, R reject and next,
// n next without deciding. Nothing happens while typing in a field. A rejection needs a reason: an empty one
// puts the cursor in the reason box instead of sending.
(function () {
  "use strict";
  function typing(target) {
    return target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
  }
  function press(id) {
    var button = document.getElementById(id);
    if (button) { button.click(); return true; }
    return false;
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) { return; }
    var reason = document.getElementById("id_reason");
    var keys = { a: "approve-button", A: "approve-next-button", r: "reject-button", R: "reject-next-button", n: "skip-next-link" };
    var id = keys[event.key];
    if (!id) { return; }
    if ((event.key === "r" || event.key === "R") && reason && !reason.value.trim()) {
      event.preventDefault();
      reason.focus();
      reason.setAttribute("placeholder", "A reason is required to reject");
      return;
    }
    if (press(id)) { event.preventDefault(); }
  });
})();
