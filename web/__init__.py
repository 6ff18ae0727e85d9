"""The web layer: viewer pages, links, WebSocket hub, signalling and the playground."""
