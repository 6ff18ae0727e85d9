// A small stand-in for livekit-client's global `LivekitClient`, served in place of the bundle in
// browser tests (the real client cannot reach a LiveKit server offline).
// It records connect() arguments and every publishData() call (bytes decoded, with options),
// and lets the test deliver data messages to the page as if a room participant (the avatar's
// agent) had published them: `deliver(text, topic)`.
"use strict";

(function () {
  const fake = {connects: [], published: [], disconnects: 0, rooms: []};
  window.__livekitFake = fake;
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();

  // The names the viewer uses, with livekit-client's string values.
  const RoomEvent = {
    TrackSubscribed: "trackSubscribed",
    DataReceived: "dataReceived",
    Reconnecting: "reconnecting",
    Reconnected: "reconnected",
    Disconnected: "disconnected",
  };

  class Room {
    constructor(options) {
      this.options = options;
      this.handlers = {};
      this.state = "disconnected";
      const room = this;
      this.localParticipant = {
        async publishData(data, options) {
          if (room.state !== "connected") throw new Error("not connected");
          fake.published.push({text: decoder.decode(data), options: options || {}});
        },
      };
      fake.rooms.push(this);
    }
    on(event, fn) {
      (this.handlers[event] = this.handlers[event] || []).push(fn);
      return this;
    }
    emit(event, ...args) {
      for (const fn of this.handlers[event] || []) fn(...args);
    }
    async connect(url, token) {
      fake.connects.push([url, token]);
      this.state = "connected";
    }
    async disconnect() {
      fake.disconnects += 1;
      this.state = "disconnected";
      this.emit(RoomEvent.Disconnected);
    }
  }

  // livekit-client calls DataReceived handlers with (payload, participant, kind, topic).
  fake.deliver = (text, topic) => {
    for (const room of fake.rooms) {
      if (room.state === "connected") {
        room.emit(RoomEvent.DataReceived, encoder.encode(text), {identity: "heygen"}, 0, topic);
      }
    }
  };

  window.LivekitClient = {Room, RoomEvent};
})();
