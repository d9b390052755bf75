"use strict";
// Gatehouse reviewer console: the session player and the live view. Our own code, served
// from the binary; the screens are drawn on the server (text rows), this only shows them.
// A recording is fetched by time range, never whole.
(function () {
  var CHUNK = 60;        // seconds of recording per fetch
  var IDLE_CAP = 2;      // longest pause kept while playing (seconds of recording)

  function clock(s) {
    s = Math.max(0, Math.floor(s));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    var mm = (h > 0 && m < 10 ? "0" : "") + m;
    return (h > 0 ? h + ":" : "") + mm + ":" + (sec < 10 ? "0" : "") + sec;
  }

  function draw(pre, frame) {
    if (frame) { pre.textContent = frame.text.join("\n"); }
  }

  function player(root) {
    var screen = document.getElementById("screen");
    var play = document.getElementById("play");
    var seek = document.getElementById("seek");
    var speedBox = document.getElementById("speed");
    var clockBox = document.getElementById("clock");
    var base = root.getAttribute("data-frames");
    var duration = parseFloat(root.getAttribute("data-duration")) || 0;
    var frames = [];     // loaded frames, in time order
    var from = 0, to = -1, next = null, end = null;
    var pos = 0, playing = false, last = 0, loading = null;

    function covered(t) { return t >= from && (t <= to || end !== null); }

    function load(t) {
      if (loading) { return loading; }
      var url = base + "?from=" + t.toFixed(3) + "&to=" + (t + CHUNK).toFixed(3);
      loading = fetch(url, { credentials: "same-origin", headers: { "accept": "application/json" } })
        .then(function (r) {
          if (!r.ok) { throw new Error("frames: HTTP " + r.status); }
          return r.json();
        })
        .then(function (a) {
          frames = a.frames || [];
          from = a.from;
          next = a.next;
          end = a.end;
          to = next !== null ? next : a.to;
          if (end !== null && end > duration) { duration = end; seek.max = String(end); }
          loading = null;
        }, function (e) {
          loading = null;
          playing = false;
          play.textContent = "Play";
          root.setAttribute("data-error", String(e));
        });
      return loading;
    }

    function frameAt(t) {
      var best = null;
      for (var i = 0; i < frames.length; i++) {
        if (frames[i].time <= t + 1e-6) { best = frames[i]; } else { break; }
      }
      return best;
    }

    function nextFrameAfter(t) {
      for (var i = 0; i < frames.length; i++) {
        if (frames[i].time > t + 1e-6) { return frames[i]; }
      }
      return null;
    }

    function show() {
      draw(screen, frameAt(pos));
      seek.value = String(pos);
      clockBox.textContent = clock(pos) + " / " + clock(duration);
      root.setAttribute("data-position", pos.toFixed(3));
    }

    function goTo(t) {
      pos = Math.max(0, Math.min(t, duration));
      if (covered(pos) && frames.length > 0) { show(); return Promise.resolve(); }
      return load(pos).then(show);
    }

    function tick(now) {
      if (!playing) { return; }
      var speed = parseFloat(speedBox.value) || 1;
      var dt = (now - last) / 1000 * speed;
      last = now;
      var upcoming = nextFrameAfter(pos);
      if (upcoming && upcoming.time - pos > IDLE_CAP) { pos = upcoming.time - IDLE_CAP; }
      pos += dt;
      if (pos >= duration || (end !== null && !upcoming && pos >= end)) {
        pos = Math.min(Math.max(pos, end || 0), duration);
        show();
        playing = false;
        play.textContent = "Play";
        root.setAttribute("data-state", "ended");
        return;
      }
      if (!covered(pos)) {
        var at = next !== null ? next : pos;
        load(at).then(function () { last = performance.now(); requestAnimationFrame(tick); });
        return;
      }
      show();
      requestAnimationFrame(tick);
    }

    play.addEventListener("click", function () {
      playing = !playing;
      play.textContent = playing ? "Pause" : "Play";
      root.setAttribute("data-state", playing ? "playing" : "paused");
      if (playing) {
        if (pos >= duration) { pos = 0; }
        goTo(pos).then(function () { last = performance.now(); requestAnimationFrame(tick); });
      }
    });
    seek.addEventListener("input", function () { goTo(parseFloat(seek.value) || 0); });
    var jumps = document.querySelectorAll("button.jump");
    for (var i = 0; i < jumps.length; i++) {
      jumps[i].addEventListener("click", function (ev) {
        var t = parseFloat(ev.currentTarget.getAttribute("data-time")) || 0;
        // Just after the command was entered: its line is on the screen.
        goTo(t + 0.05);
      });
    }
    goTo(0);
  }

  function live(root) {
    var screen = document.getElementById("live-screen");
    var status = document.getElementById("live-status");
    var source = new EventSource(root.getAttribute("data-live"));
    source.addEventListener("frame", function (ev) {
      draw(screen, JSON.parse(ev.data));
      root.setAttribute("data-state", "watching");
    });
    source.addEventListener("end", function () {
      source.close();
      status.textContent = "The session has ended.";
      root.setAttribute("data-state", "ended");
    });
  }

  var p = document.getElementById("player");
  if (p) { player(p); }
  var l = document.getElementById("live");
  if (l) { live(l); }
}());
