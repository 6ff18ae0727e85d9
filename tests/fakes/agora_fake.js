// A small stand-in for agora-rtc-sdk-ng's global `AgoraRTC`, served in place of the bundle in
// browser tests (the real SDK cannot reach Agora offline: its join() never settles).
// It records join() arguments and sent stream messages, "publishes" a remote user whose video
// is an animated canvas and whose audio is an oscillator, and lets the test deliver
// stream messages to the page as if the avatar had sent them.
// When the test sets `window.__fakeAkoolUrl` (`wire_akool` in tests/web/conftest.py), every
// stream message the page sends is posted there, synchronously, to the fake AKool data channel
// (tests/fakes/akool.py), which measures it and answers; its answers come back to the page as
// "stream-message" events, as the avatar's would. `window.__agoraJoinDelayMs` makes join() take that long (a page that sends
// before join() resolved gets the SDK's error, as with the real one).
"use strict";

(function () {
  const fake = {joins: [], sent: [], subscribed: [], left: 0, clients: [], refused: 0};
  window.__agoraFake = fake;

  function canvasTrack() {
    const canvas = document.createElement("canvas");
    canvas.width = 320;
    canvas.height = 240;
    const g = canvas.getContext("2d");
    let n = 0;
    setInterval(() => {
      n += 1;
      g.fillStyle = "#234";
      g.fillRect(0, 0, 320, 240);
      g.fillStyle = "#fc6";
      g.beginPath();
      g.arc(160 + 40 * Math.sin(n / 5), 120, 50, 0, 2 * Math.PI);
      g.fill();
    }, 1000 / 15);
    return canvas.captureStream(15).getVideoTracks()[0];
  }

  function audioTrack() {
    const ctx = new AudioContext();
    const osc = ctx.createOscillator();
    const dest = ctx.createMediaStreamDestination();
    osc.frequency.value = 220;
    osc.connect(dest);
    osc.start();
    return dest.stream.getAudioTracks()[0];
  }

  function remoteTrack(kind, make) {
    let track = null;
    return {
      trackMediaType: kind,
      getMediaStreamTrack() {
        track = track || make();
        return track;
      },
    };
  }

  class FakeClient {
    constructor(config) {
      this.config = config;
      this.handlers = {};
      this.joined = false;
      fake.clients.push(this);
    }
    on(event, fn) {
      (this.handlers[event] = this.handlers[event] || []).push(fn);
    }
    emit(event, ...args) {
      for (const fn of this.handlers[event] || []) fn(...args);
    }
    async join(appId, channel, token, uid) {
      fake.joins.push([appId, channel, token, uid]);
      const delay = window.__agoraJoinDelayMs || 0;
      if (delay) await new Promise((r) => setTimeout(r, delay));
      this.channel = channel;
      this.joined = true;
      this.emit("connection-state-change", "CONNECTED", "CONNECTING");
      const user = {
        uid: 4242,
        hasVideo: true,
        hasAudio: true,
        videoTrack: null,
        audioTrack: null,
        _video: remoteTrack("video", canvasTrack),
        _audio: remoteTrack("audio", audioTrack),
      };
      setTimeout(() => {
        if (!this.joined) return;
        this.emit("user-published", user, "video");
        this.emit("user-published", user, "audio");
      }, 50);
      return uid;
    }
    async subscribe(user, mediaType) {
      fake.subscribed.push(mediaType);
      if (mediaType === "video") user.videoTrack = user._video;
      else user.audioTrack = user._audio;
      return mediaType === "video" ? user.videoTrack : user.audioTrack;
    }
    async sendStreamMessage(message, needRetry) {
      if (!this.joined) {
        fake.refused += 1;
        throw new Error("INVALID_OPERATION: not joined");
      }
      const text = typeof message === "string" ? message : new TextDecoder().decode(message);
      // One clock for every tab: the page's time origin plus its high-resolution time.
      const at = performance.timeOrigin + performance.now();
      fake.sent.push({t: performance.now(), at: at, text: text, needRetry: needRetry});
      if (window.__fakeAkoolUrl) {
        // Synchronous, so that the fake avatar has the message before this call returns.
        const xhr = new XMLHttpRequest();
        xhr.open("POST", window.__fakeAkoolUrl, false);
        xhr.setRequestHeader("Content-Type", "application/json");
        xhr.send(JSON.stringify({channel: this.channel, text: text, at: at}));
        const replies = xhr.status === 200 ? JSON.parse(xhr.responseText) : [];
        setTimeout(() => {
          for (const r of replies) {
            if (this.joined) this.emit("stream-message", 4242, new TextEncoder().encode(r));
          }
        }, 20);
      }
    }
    async leave() {
      this.joined = false;
      fake.left += 1;
    }
  }

  window.AgoraRTC = {
    VERSION: "fake",
    createClient(config) {
      return new FakeClient(config);
    },
  };

  // Deliver a data message from the avatar to every joined client.
  fake.deliver = function (text) {
    const bytes = new TextEncoder().encode(text);
    for (const c of fake.clients) if (c.joined) c.emit("stream-message", 4242, bytes);
  };
})();
