// Keyboard shortcuts for the review page: A accept, C correct (focus the value), S skip, N next case,
// Ctrl+Enter in the feedback sends a correction. Keys typed into a field are left alone.
"use strict";
document.addEventListener("keydown", (event) => {
  const target = event.target;
  const typing = target instanceof HTMLElement && target.closest("input, textarea, select, [contenteditable]");
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && target instanceof HTMLElement && target.id === "feedback") {
    event.preventDefault();
    document.getElementById("correct")?.click();
    return;
  }
  if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key.toLowerCase();
  if (key === "c" && document.getElementById("value")) {
    event.preventDefault();
    document.getElementById("value").focus();
    return;
  }
  if (key === "n" && document.getElementById("next")) {
    event.preventDefault();
    document.getElementById("next").click();
    return;
  }
  const button = key === "c" ? null : document.querySelector(`button[data-key="${key}"]`);
  if (button) {
    event.preventDefault();
    button.click();
  }
});
