// The console's forecast, in place: the Start button posts the form, a progress bar follows the
// job's state (GET /admin/forecast/<id>), and the finished result is swapped in without a reload.
// Without JavaScript the same form posts to the forecast's own page, which refreshes itself.
(function () {
  "use strict";

  var POLL_MS = 700;
  var GIVE_UP_AFTER = 5; // polls that fail one after the other before the page stops asking

  function part(box, name) {
    return box.querySelector("[data-forecast-" + name + "]");
  }

  function say(box, text, isError) {
    var status = part(box, "status");
    status.textContent = text;
    status.classList.toggle("field__error", Boolean(isError));
  }

  function showProgress(box, fraction) {
    var bar = part(box, "progress");
    bar.hidden = false;
    bar.value = fraction;
    bar.textContent = Math.round(fraction * 100) + "%";
  }

  function busy(box, on) {
    var button = part(box, "start");
    button.disabled = on;
    if (!on) {
      part(box, "progress").hidden = true;
    }
  }

  // Refused values: each message beside its field, as the server's own page shows them.
  function clearErrors(form) {
    form.querySelectorAll(".field .field__error").forEach(function (node) { node.remove(); });
    form.querySelectorAll(".field--error").forEach(function (node) { node.classList.remove("field--error"); });
    form.querySelectorAll("[aria-invalid]").forEach(function (input) {
      input.removeAttribute("aria-invalid");
      var hint = document.getElementById(input.id + "-hint");
      if (hint) { input.setAttribute("aria-describedby", hint.id); } else { input.removeAttribute("aria-describedby"); }
    });
  }

  function showErrors(form, errors) {
    Object.keys(errors).forEach(function (name) {
      var input = form.elements[name];
      if (!input || !input.id) { return; }
      var error = document.createElement("p");
      error.className = "field__error";
      error.id = input.id + "-error";
      error.setAttribute("data-forecast-error", "");
      error.textContent = errors[name];
      input.insertAdjacentElement("afterend", error);
      input.closest(".field").classList.add("field--error");
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", error.id);
    });
  }

  function showResult(box, state) {
    return fetch(state.result_url, { headers: { Accept: "text/html" }, credentials: "same-origin" })
      .then(function (answer) {
        if (!answer.ok) { throw new Error("the result did not load (" + answer.status + ")"); }
        return answer.text();
      })
      .then(function (html) {
        var area = part(box, "result");
        area.innerHTML = html;
        area.setAttribute("data-job", state.id);
        area.setAttribute("data-state", state.state);
        if (window.history && window.history.replaceState) {
          var here = new URL(window.location.href);
          if (here.pathname !== state.view_url) {
            here.searchParams.set("job", state.id);
            window.history.replaceState(null, "", here.toString());
          }
        }
      });
  }

  function follow(box, statusUrl) {
    var failures = 0;
    function poll() {
      fetch(statusUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (answer) {
          return answer.json().then(function (body) { return { ok: answer.ok, body: body }; });
        })
        .then(function (reply) {
          failures = 0;
          var state = reply.body;
          if (!reply.ok) {
            say(box, state.message || "The forecast is gone.", true);
            busy(box, false);
            return;
          }
          if (state.state === "done") {
            showProgress(box, 1);
            return showResult(box, state).then(function () {
              say(box, state.message);
              busy(box, false);
            });
          }
          if (state.state === "failed") {
            say(box, state.message, true);
            busy(box, false);
            return;
          }
          showProgress(box, state.progress);
          say(box, state.message);
          window.setTimeout(poll, POLL_MS);
        })
        .catch(function (error) {
          failures += 1;
          if (failures >= GIVE_UP_AFTER) {
            say(box, "The forecast's progress could not be read (" + error.message + "). Reload the page to see it.", true);
            busy(box, false);
          } else {
            window.setTimeout(poll, POLL_MS * 2);
          }
        });
    }
    poll();
  }

  function start(box, form) {
    clearErrors(form);
    busy(box, true);
    showProgress(box, 0);
    say(box, "Starting the forecast…");
    var token = document.querySelector('meta[name="csrf-token"]');
    fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": token ? token.content : "" }
    })
      .then(function (answer) {
        return answer.json().then(function (body) { return { ok: answer.ok, body: body }; });
      })
      .then(function (reply) {
        if (!reply.ok) {
          showErrors(form, reply.body.errors || {});
          say(box, reply.body.message || "Nothing was started.", true);
          busy(box, false);
          return;
        }
        follow(box, reply.body.status_url);
      })
      .catch(function (error) {
        say(box, "The forecast could not be started (" + error.message + "). Try again.", true);
        busy(box, false);
      });
  }

  document.querySelectorAll("[data-forecast]").forEach(function (box) {
    var form = part(box, "form");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      start(box, form);
    });
    var area = part(box, "result");
    var state = area.getAttribute("data-state");
    if (state === "queued" || state === "running") {
      busy(box, true);
      part(box, "progress").hidden = false;
      follow(box, area.getAttribute("data-status-url"));
    }
  });
})();
