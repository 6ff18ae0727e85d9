// The avatarbot viewer page: one page for three transports (webrtc with a server offer, agora,
// livekit), a WebSocket for state, countdown, transcript and the relay of vendor data messages.
// No framework, no inline script (the CSP allows only our own files).
"use strict";

(function () {
  const cfg = JSON.parse(document.getElementById("viewer-config").textContent);
  const $ = (id) => document.getElementById(id);
  const video = $("video");
  const statusEl = $("status");
  const STATUS_TEXT = {
    connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", ended: "Ended",
    failed: "Could not connect", elsewhere: "In another tab", pending: "Starting…",
  };

  // State shared with the test suite and devtools (no secrets: the page already holds these).
  const viewer = {
    transport: cfg.transport, status: "connecting", viewerId: null, active: false,
    pc: null, agora: null, room: null, relayed: 0, reported: 0, ended: false, error: null,
  };
  window.avatarViewer = viewer;

  let ws = null;
  let wsRetry = 0;
  let media = null;  // the running transport: {stop: async () => {}}
  let secondsLeft = cfg.seconds_left || 0;
  let deadline = Date.now() + secondsLeft * 1000;

  // ------------------------------------------------------------------ status and countdown
  function setStatus(name, detail) {
    viewer.status = name;
    statusEl.className = "status " + name;
    statusEl.textContent = detail || STATUS_TEXT[name] || name;
  }

  function setCountdown(seconds) {
    secondsLeft = Math.max(0, seconds | 0);
    deadline = Date.now() + secondsLeft * 1000;
    renderCountdown();
  }

  function renderCountdown() {
    const left = viewer.ended ? 0 : Math.max(0, Math.round((deadline - Date.now()) / 1000));
    const m = Math.floor(left / 60), s = left % 60;
    $("countdown").textContent = m + ":" + String(s).padStart(2, "0");
    $("countdown").classList.toggle("low", left > 0 && left <= 60);
  }
  const countdownTimer = setInterval(renderCountdown, 1000);

  function showNotice(text, retry, hint) {
    $("notice-text").textContent = text;
    $("notice").hidden = !text;
    $("retry").hidden = !retry;
    $("notice-hint").textContent = hint || "";
    $("notice-hint").hidden = !hint;
    $("notice-links").hidden = true;
  }

  $("retry").addEventListener("click", async () => {
    showNotice("");
    await stopMedia();
    startMedia();
  });

  // ------------------------------------------------------------------ no media in time
  // Where the browser cannot reach the media (a firewall, no TURN relay), WebRTC may try for
  // minutes without failing: after media_timeout_s the page says so and offers Retry.
  let mediaTimer = null;
  function watchMedia(attempt) {
    clearTimeout(mediaTimer);
    const seconds = cfg.media_timeout_s || 15;
    mediaTimer = setTimeout(() => {
      if (media !== attempt || viewer.ended || viewer.status === "live") return;
      viewer.mediaTimedOut = true;
      setStatus("failed", "No video");
      showNotice("The video has not arrived after " + Math.round(seconds) + " seconds. "
        + "Your network may block the connection to this server's video (a firewall or VPN). "
        + "Retry, or try another network.", true, cfg.operator_hint || "");
    }, seconds * 1000);
  }

  // ------------------------------------------------------------------ transcript
  const partial = {};  // speaker -> the line still growing (A2E streams its answers in pieces)
  let lastKept = 0;  // time of the newest line of the kept history shown

  function addLine(line) {
    // A line already shown from the kept history (hello) is not shown twice.
    if (line.final !== false && typeof line.at === "number" && line.at <= lastKept) return;
    let li = partial[line.speaker];
    if (!li) {
      li = document.createElement("li");
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = speakerLabel(line);
      const text = document.createElement("span");
      text.className = "text";
      li.append(who, text);
      const list = $("transcript");
      list.append(li);
      while (list.children.length > 200) list.firstElementChild.remove();
      $("transcript-empty").hidden = true;
    }
    // A growing line carries its whole text so far: replace, do not append.
    li.querySelector(".text").textContent = line.text;
    li.className = "line " + line.speaker + (line.final === false ? " partial" : "");
    if (line.final === false) partial[line.speaker] = li; else delete partial[line.speaker];
    li.scrollIntoView({block: "nearest"});
  }

  function speakerLabel(line) {
    if (line.speaker === "avatar") return cfg.avatar;
    if (line.speaker !== "user") return "Note";
    const verb = line.intent === "say" ? "had the avatar say"
      : line.intent === "ask" ? "asked" : "said";
    return (line.author || "Someone") + " " + verb;
  }

  // ------------------------------------------------------------------ playback
  let playTimer = null;
  function attachTracks(tracks) {
    let stream = video.srcObject;
    if (!(stream instanceof MediaStream)) {
      stream = new MediaStream();
      video.srcObject = stream;
    }
    for (const track of tracks) {
      for (const old of stream.getTracks()) {
        if (old.kind === track.kind && old !== track) stream.removeTrack(old);
      }
      if (!stream.getTracks().includes(track)) stream.addTrack(track);
    }
    // Chromium judges autoplay when play() is called: a stream without sound yet may start
    // unmuted and then get its audio without the visitor's consent. So play once the audio is
    // there (or, for a silent stream, after a short wait), and ask for a tap if it is refused.
    clearTimeout(playTimer);
    if (stream.getAudioTracks().length) play();
    else playTimer = setTimeout(play, 800);
  }

  function play() {
    video.muted = false;
    video.play().then(() => {
      viewer.autoplay = "allowed";
      $("unmute").hidden = true;
    }).catch(() => {
      viewer.autoplay = "blocked";
      console.info("avatarbot: autoplay with sound was refused; showing tap to unmute");
      // Autoplay with sound was refused: play muted and offer a tap to unmute.
      video.muted = true;
      video.play().catch(() => {});
      $("unmute").hidden = false;
    });
  }

  $("unmute").addEventListener("click", () => {
    video.muted = false;
    video.play().catch(() => {});
    $("unmute").hidden = true;
  });

  function clearVideo() {
    const stream = video.srcObject;
    if (stream instanceof MediaStream) stream.getTracks().forEach((t) => stream.removeTrack(t));
    video.srcObject = null;
  }

  // ------------------------------------------------------------------ transports
  async function post(path, body) {
    const resp = await fetch("/v/" + encodeURIComponent(cfg.token) + path, {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body), credentials: "same-origin", cache: "no-store",
    });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(data.error || ("HTTP " + resp.status));
    return data;
  }

  async function startWebRTC(attempt) {
    const viewerId = viewer.viewerId;
    const pc = new RTCPeerConnection({iceServers: cfg.media.ice_servers || []});
    viewer.pc = pc;
    attempt.stopFn = async () => {
      if (viewer.pc === pc) viewer.pc = null;
      pc.close();
      await post("/webrtc/leave", {viewer_id: viewerId}).catch(() => {});
    };
    let answered = false;
    const early = [];
    const sendCandidate = (c) =>
      post("/webrtc/candidate", {viewer_id: viewerId, candidate: c}).catch(() => {});
    pc.onicecandidate = (ev) => {
      const c = ev.candidate ? ev.candidate.toJSON() : null;
      // Candidates go after the answer, so the server never sees them before it.
      if (answered) sendCandidate(c); else early.push(c);
    };
    pc.ontrack = (ev) => attachTracks([ev.track]);
    // HeyGen v1 talks about its speech on a data channel it opens; report what it says.
    pc.ondatachannel = (ev) => {
      ev.channel.binaryType = "arraybuffer";
      ev.channel.onmessage = (m) => reportData(m.data);
    };
    pc.onconnectionstatechange = () => {
      if (pc !== viewer.pc) return;
      const s = pc.connectionState;
      if (s === "connected") { setStatus("live"); showNotice(""); }
      else if (s === "disconnected") setStatus("reconnecting");
      else if (s === "failed") setStatus("failed", "Could not connect to the video");
    };
    const offer = await post("/webrtc/offer", {viewer_id: viewerId});
    await pc.setRemoteDescription(offer);
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    await post("/webrtc/answer", {viewer_id: viewerId, sdp: pc.localDescription.sdp});
    answered = true;
    early.splice(0).forEach(sendCandidate);
  }

  async function startAgora(attempt) {
    const m = cfg.media;
    if (!window.AgoraRTC) throw new Error("the Agora SDK did not load");
    // "rtc" mode: every member may subscribe and send data-stream messages (AKool's demo does
    // the same); we never publish tracks of our own.
    const client = window.AgoraRTC.createClient({mode: "rtc", codec: "vp8"});
    viewer.agora = client;
    attempt.stopFn = async () => {
      if (viewer.agora === client) viewer.agora = null;
      await client.leave().catch(() => {});
    };
    client.on("user-published", async (user, mediaType) => {
      await client.subscribe(user, mediaType);
      const track = mediaType === "video" ? user.videoTrack : user.audioTrack;
      if (track) attachTracks([track.getMediaStreamTrack()]);
      setStatus("live");
    });
    client.on("stream-message", (uid, data) => reportData(data));
    client.on("connection-state-change", (state) => {
      if (client !== viewer.agora) return;
      if (state === "RECONNECTING") setStatus("reconnecting");
      else if (state === "CONNECTED" && viewer.status === "reconnecting") setStatus("live");
    });
    await client.join(m.app_id, m.channel, m.token, m.uid);
    if (attempt.cancelled || viewer.agora !== client) return;
    joinedRoom(true);
    if (viewer.status !== "live") setStatus("connecting", "Waiting for the avatar…");
  }

  async function startLiveKit(attempt) {
    const LK = window.LivekitClient;
    if (!LK) throw new Error("the LiveKit SDK did not load");
    const room = new LK.Room({adaptiveStream: true, dynacast: false});
    viewer.room = room;
    attempt.stopFn = async () => {
      if (viewer.room === room) viewer.room = null;
      await room.disconnect().catch(() => {});
    };
    room.on(LK.RoomEvent.TrackSubscribed, (track) => attachTracks([track.mediaStreamTrack]));
    room.on(LK.RoomEvent.DataReceived, (payload) => reportData(payload));
    room.on(LK.RoomEvent.Reconnecting, () => setStatus("reconnecting"));
    room.on(LK.RoomEvent.Reconnected, () => setStatus("live"));
    await room.connect(cfg.media.url, cfg.media.token);
    if (attempt.cancelled || viewer.room !== room) return;
    joinedRoom(true);
    setStatus("live");
  }

  const TRANSPORTS = {webrtc: startWebRTC, agora: startAgora, livekit: startLiveKit};

  async function startMedia() {
    if (media || viewer.ended || !TRANSPORTS[cfg.transport]) return;
    // One attempt at the media; stopping it works even while it is still connecting.
    const attempt = {cancelled: false, stopFn: null};
    attempt.stop = async () => {
      attempt.cancelled = true;
      if (attempt.stopFn) await attempt.stopFn();
    };
    media = attempt;
    setStatus("connecting");
    viewer.mediaTimedOut = false;
    watchMedia(attempt);
    try {
      await TRANSPORTS[cfg.transport](attempt);
    } catch (err) {
      viewer.error = (err && (err.code || err.name)) ? (err.code || err.name) + ": " + err.message
        : String(err);
      console.warn("media failed", err);
      if (attempt.cancelled) return;
      if (media === attempt) media = null;
      if (attempt.stopFn) attempt.stopFn().catch(() => {});
      setStatus("failed", "Could not connect");
      showNotice("Could not connect to the avatar's video.", true, cfg.operator_hint || "");
    }
  }

  async function stopMedia() {
    const running = media;
    media = null;
    if (relayState.joined) joinedRoom(false);
    if (running) await running.stop();
    clearVideo();
  }

  // ------------------------------------------------------------------ relay (vendor data channel)
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  function reportData(data) {
    let text = typeof data === "string" ? data : decoder.decode(data);
    if (viewer.maxReport && encoder.encode(text).length > viewer.maxReport - 64) {
      console.warn("avatarbot: a data message too large to report was dropped");
      return;
    }
    let payload = text;
    try { payload = JSON.parse(text); } catch (e) { /* not JSON: pass the text on */ }
    viewer.reported += 1;
    flushAcks();  // the server learns a message went out before it hears the answer to it
    send({type: "data", payload: payload});
  }

  // The server keeps each message until this page says the SDK sent it; the page announces when
  // it is in the room ("joined"), and only then does it get messages. The vendor's limits come
  // with them (config): each message at most max_message_bytes, and bytes_per_second of encoded
  // bytes (UTF-8, as the vendor counts), the pace the server-side chunker is built for.
  const relayState = {config: null, queue: [], busy: false, joined: false, nextAt: 0};
  // Ids already sent into this session's room, kept across reloads and shared with other tabs
  // of this browser: a message handed out again (reload, reconnect, takeover) is not resent.
  // Ids are unique across sessions (a per-process prefix), so one list serves every link.
  const SENT_KEY = "avatarbot-relayed";
  const NEXT_KEY = "avatarbot-relay-next";
  function sentIds() {
    try { return JSON.parse(localStorage.getItem(SENT_KEY) || "[]"); } catch (e) { return []; }
  }
  function markSent(id, sent) {
    const ids = sentIds().filter((x) => x !== id);
    if (sent) ids.push(id);
    try { localStorage.setItem(SENT_KEY, JSON.stringify(ids.slice(-500))); } catch (e) { /* full */ }
  }

  // The transport's own way into the room; null while the page is not in it.
  function roomSender() {
    if (!relayState.joined) return null;
    if (viewer.agora) {
      const client = viewer.agora;
      return (text) => client.sendStreamMessage(text, false);
    }
    if (viewer.room && viewer.room.localParticipant) {
      const participant = viewer.room.localParticipant;
      const topic = relayState.config && relayState.config.topic;
      return (text) => participant.publishData(encoder.encode(text),
        topic ? {reliable: true, topic: topic} : {reliable: true});
    }
    return null;
  }

  // Acknowledgements go in small batches: one socket message per data message could run into
  // the socket's rate limit when many short messages go out.
  const pendingAcks = [];
  let ackTimer = null;
  function ack(id) {
    pendingAcks.push(id);
    if (!ackTimer) ackTimer = setTimeout(flushAcks, 100);
  }
  function flushAcks() {
    clearTimeout(ackTimer);
    ackTimer = null;
    if (pendingAcks.length) send({type: "relayed", ids: pendingAcks.splice(0)});
  }

  async function joinedRoom(yes) {
    relayState.joined = yes;
    if (!yes) {
      relayState.queue.length = 0;  // the server hands them out again after the next join
      // A send under way settles (and is acknowledged) before the server may hand what this
      // page held to another tab: the vendor must not get a message twice.
      while (relayState.busy) await sleep(20);
      flushAcks();
    }
    send({type: "joined", joined: yes});
  }

  function relay(msg) {
    relayState.config = msg.config || relayState.config;
    const queued = new Set(relayState.queue.map((m) => m.id));
    for (const m of msg.messages || []) if (!queued.has(m.id)) relayState.queue.push(m);
    drainRelay();
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  async function drainRelay() {
    if (relayState.busy) return;
    relayState.busy = true;
    try {
      while (relayState.queue.length) {
        if (!roomSender()) return;
        const m = relayState.queue[0];
        if (sentIds().includes(m.id)) {
          relayState.queue.shift();
          ack(m.id);
          continue;
        }
        const text = JSON.stringify(m.payload);
        const size = encoder.encode(text).length;
        const limits = relayState.config || {};
        if (limits.max_message_bytes && size > limits.max_message_bytes) {
          // Cannot happen with the server's chunker; never push an oversized message anyway.
          console.warn("avatarbot: a relayed message is over the vendor's size limit");
          relayState.queue.shift();
          continue;
        }
        // The pace holds across a reload or a takeover in this browser: the earliest time for
        // the next message is shared with the other tabs.
        const next = Math.max(relayState.nextAt, Number(localStorage.getItem(NEXT_KEY)) || 0);
        const wait = next - Date.now();
        if (wait > 0) await sleep(wait);
        const sender = roomSender();
        if (!sender) return;
        if (relayState.queue[0] === m) {
          const start = Date.now();
          // Recorded before the call: once the SDK has the bytes they leave, even if this page
          // is unloaded before the promise settles; a reload must not send them again.
          markSent(m.id, true);
          try {
            await sender(text);
          } catch (err) {
            markSent(m.id, false);
            console.warn("could not send a data message; retrying", err);
            await sleep(500);
            continue;
          }
          // Keep the vendor's pace in encoded bytes (AKool: 5,000 B/s leaves room under 6 KB/s).
          if (limits.bytes_per_second > 0) {
            relayState.nextAt = start + (size / limits.bytes_per_second) * 1000;
            try { localStorage.setItem(NEXT_KEY, String(relayState.nextAt)); } catch (e) { /* */ }
          }
          if (relayState.queue[0] === m) relayState.queue.shift();
          viewer.relayed += 1;
          ack(m.id);
        }
      }
    } finally {
      relayState.busy = false;
    }
  }

  // ------------------------------------------------------------------ websocket
  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    // A tab that was displaced by another one reconnects without taking the media back.
    const passive = viewer.viewerId !== null && !viewer.active ? "?passive=1" : "";
    ws = new WebSocket(
      scheme + location.host + "/v/" + encodeURIComponent(cfg.token) + "/ws" + passive);
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      handle(msg);
    };
    ws.onclose = () => {
      ws = null;
      if (viewer.ended) return;
      // The server went away or the network dropped: start over when it is back.
      stopMedia();
      setStatus("reconnecting");
      wsRetry = Math.min(wsRetry + 1, 6);
      setTimeout(connect, 500 * 2 ** wsRetry);
    };
  }

  function handle(msg) {
    switch (msg.type) {
      case "hello":
        wsRetry = 0;
        if (Array.isArray(msg.transcript) && !viewer.historyShown) {
          viewer.historyShown = true;
          msg.transcript.forEach(addLine);
          lastKept = msg.transcript.reduce((t, l) => Math.max(t, l.at || 0), 0);
        }
        viewer.viewerId = msg.viewer_id;
        viewer.maxReport = msg.max_report_bytes || 0;
        viewer.active = msg.active;
        setCountdown(msg.seconds_left);
        if (msg.state === "pending") { setStatus("pending"); return; }
        if (msg.state === "ending") { setStatus("ended", "Ending…"); return; }
        $("elsewhere").hidden = msg.active;
        if (msg.active) startMedia(); else setStatus("elsewhere");
        break;
      case "state":
        if (msg.state === "live" && !cfg.transport) { location.reload(); return; }
        if (msg.state === "live") setCountdown(msg.seconds_left);
        if (msg.state === "ending") setStatus("ended", "Ending…");
        if (msg.state === "failed") setStatus("failed", "The session failed");
        break;
      case "transcript":
        addLine(msg);
        break;
      case "warning":
        $("warning").textContent = msg.text;
        $("warning").hidden = false;
        if (typeof msg.seconds_left === "number") setCountdown(msg.seconds_left);
        break;
      case "relay":
        relay(msg);
        break;
      case "superseded":
        viewer.active = false;
        stopMedia();
        setStatus("elsewhere");
        $("elsewhere").hidden = false;
        break;
      case "active":
        viewer.active = true;
        $("elsewhere").hidden = true;
        startMedia();
        break;
      case "end":
        end(msg.summary);
        break;
    }
  }

  $("take-back").addEventListener("click", () => send({type: "takeover"}));

  function end(summary) {
    if (viewer.ended) return;
    viewer.ended = true;
    clearInterval(countdownTimer);
    renderCountdown();
    stopMedia();
    setStatus("ended");
    $("elsewhere").hidden = true;
    $("unmute").hidden = true;
    clearTimeout(mediaTimer);
    let text = "The session has ended.";
    if (summary) {
      const m = Math.floor(summary.duration_s / 60), s = summary.duration_s % 60;
      text += " It lasted " + (m ? m + " min " : "") + s + " s.";
      if (summary.reason) text += " (" + summary.reason + ")";
    }
    showNotice(text);
    $("ended-transcript").href = "/v/" + encodeURIComponent(cfg.token) + "/transcript.txt";
    $("ended-another").hidden = !cfg.playground;
    $("notice-links").hidden = false;
    const chat = $("chat");
    if (chat) chat.querySelectorAll("textarea, button").forEach((el) => { el.disabled = true; });
    if (ws) ws.close();
  }

  window.addEventListener("pagehide", () => {
    flushAcks();
    if (media) media.stop();
    // The host's tab is closing or navigating away: tell the server, which ends the playground
    // session unless a page of it is back within a few seconds (a reload).
    if (cfg.role === "host" && !viewer.ended && navigator.sendBeacon) {
      navigator.sendBeacon("/playground/" + encodeURIComponent(cfg.token) + "/leave");
    }
  });

  // ------------------------------------------------------------------ host chat box
  const chat = $("chat");
  if (chat) {
    const call = async (action, body) => {
      const resp = await fetch("/playground/" + encodeURIComponent(cfg.token) + "/" + action, {
        method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify(body || {}), credentials: "same-origin",
      });
      const data = await resp.json().catch(() => ({}));
      showError(resp.ok ? "" : (data.error || "Something went wrong; try again."));
      return resp.ok;
    };
    const showError = (text) => {
      const err = $("chat-error");
      err.hidden = !text;
      err.textContent = text;
      err.dataset.kind = "";
    };
    // The limit comes from the provider's capabilities (page config): counted, never cut.
    const limit = cfg.max_text || 2000;
    const box = $("chat-text");
    const counter = () => {
      const n = box.value.trim().length;
      const over = n > limit;
      $("chat-count").textContent = n + " / " + limit + (over ? " (" + (n - limit) + " too many)" : "");
      $("chat-count").classList.toggle("over", over);
      box.setAttribute("aria-invalid", over ? "true" : "false");
      return over;
    };
    box.addEventListener("input", () => {
      // Typing answers the page's own complaint (empty, too long) once it no longer holds.
      const kind = $("chat-error").dataset.kind;
      if (!counter() && (kind === "length" || kind === "empty")) showError("");
    });
    box.addEventListener("paste", () => {
      // After the paste lands: announce a text over the limit instead of cutting it.
      setTimeout(() => {
        if (!counter()) return;
        const n = box.value.trim().length;
        const text = "The message is now " + n + " characters; " + cfg.avatar + " takes at most "
          + limit + ". Shorten it (or send it in parts) before asking.";
        showError(text);
        $("chat-error").dataset.kind = "length";
        $("chat-announce").textContent = text;
      }, 0);
    });
    counter();
    chat.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const action = ev.submitter && ev.submitter.value === "say" ? "say" : "ask";
      const text = box.value.trim();
      if (!text) {
        showError("Type a message first, then press Ask (or Say).");
        $("chat-error").dataset.kind = "empty";
        box.focus();
        return;
      }
      if (text.length > limit) {
        showError("This message is " + text.length + " characters; the limit is " + limit
          + ". Shorten it by " + (text.length - limit) + " characters.");
        $("chat-error").dataset.kind = "length";
        box.focus();
        return;
      }
      // Clear only what was sent: the person may have typed the next message meanwhile.
      if (await call(action, {text}) && box.value.trim() === text) {
        box.value = "";
        counter();
      }
    });
    if ($("interrupt")) $("interrupt").addEventListener("click", () => call("interrupt"));
    $("chat-text").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("ask").click(); }
    });
    $("stop").addEventListener("click", () => call("stop"));
  }

  setStatus(cfg.state === "pending" ? "pending" : "connecting");
  renderCountdown();
  connect();
})();
