// UNSAFE bypass-lab preset only: hide the article text the server already sent.
// Turning JavaScript off, reading the page source or clearing cookies defeats it;
// that is the lesson. gate's real presets never send gated text at all.
document.documentElement.classList.add("porous-locked");
