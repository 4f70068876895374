// Browser client for the WebSocketService protocol (plain JavaScript, no build step).
//
// new WsClient(url, {topics, format, onMessage, onState}) connects, announces the
// envelope protocol (subprotocol "envelope.v1") unless format === "legacy",
// subscribes to its topics, answers heartbeats, and reconnects with jittered
// exponential backoff, resubscribing each time. Per topic it remembers the last
// (epoch, seq) and reports a gap when a seq is skipped; a message of the topic
// without a seq forgets the position. On reconnect it resubscribes with
// {resume: {epoch, seq}}: the server replays what was missed (recovered: true) or
// says it cannot (recovered: false); replayed duplicates are dropped by seq.
// With {token}, the token travels as the subprotocol "bearer.<token>"; setToken()
// sends a fresh one before the server closes the socket at the token's expiry.
"use strict";

class WsClient {
  constructor(url, options = {}) {
    this.url = url;
    this.topics = options.topics || [];
    this.format = options.format || "envelope";
    this.token = options.token || null;
    this.onMessage = options.onMessage || (() => {});
    this.onState = options.onState || (() => {});
    this.minDelay = options.minDelay || 250;
    this.maxDelay = options.maxDelay || 8000;
    this.attempt = 0;
    this.positions = {};
    this.gaps = 0;
    this.resumes = {complete: 0, incomplete: 0};
    this.received = 0;
    this.closedByUser = false;
    this.state = "idle";
    this.connectionId = null;
    this.connect();
  }

  setState(state, detail) {
    this.state = state;
    this.onState(state, detail || "");
  }

  connect() {
    this.setState(this.attempt ? "reconnecting" : "connecting");
    // A token travels as the subprotocol "bearer.<token>": browsers cannot set an
    // Authorization header, and a query string is logged. The server must echo one
    // offered subprotocol (never the token), so an old-protocol client with a token
    // offers the marker "legacy.v1" (the shim echoes it) and stays on old payloads;
    // without a token it offers nothing, exactly like the old client.
    const protocols = [];
    if (this.format !== "legacy") protocols.push("envelope.v1");
    else if (this.token) protocols.push("legacy.v1");
    if (this.token) protocols.push(`bearer.${this.token}`);
    const ws = new WebSocket(this.url, protocols);
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.setState("open");
      if (this.format !== "legacy") {
        for (const topic of this.topics) {
          // After a reconnect, resume from the last (epoch, seq) seen on the topic: the
          // server replays what was missed, or answers recovered: false.
          const last = this.positions[topic];
          const data = last ? {topic, resume: {epoch: last.epoch, seq: last.seq}} : {topic};
          this.send({type: "subscribe", data, id: topic});
        }
      }
    };
    ws.onmessage = (event) => this.handle(event.data);
    ws.onclose = (event) => {
      this.setState("closed", `code ${event.code}`);
      if (!this.closedByUser) this.scheduleReconnect(event.code);
    };
    ws.onerror = () => {};  // onclose follows and reconnects
  }

  scheduleReconnect(code) {
    if (code === 1008 || code === 1009) {
      this.setState("refused", `code ${code}: not reconnecting`);
      return;
    }
    const ceiling = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * ceiling / 2;
    this.attempt += 1;
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  // A fresh token for this connection (before the old one expires) and the next ones.
  // The server answers connection_established with the new expires_at, or an error
  // (invalid_token, principal_mismatch) and keeps the old deadline.
  setToken(token) {
    this.token = token;
    this.send({type: "auth", data: {token}, id: "auth"});
  }

  send(value) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(value));
  }

  handle(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch (err) {
      return;  // not JSON: nothing a dashboard can show
    }
    this.received += 1;
    if (this.format !== "legacy") {
      if (message.type === "heartbeat") { this.send({type: "pong"}); return; }
      if (message.type === "connection_established") {
        this.connectionId = message.data && message.data.connection_id;
      }
      if (message.type === "subscribed" && message.data) {
        if (message.data.recovered === true) this.resumes.complete += 1;
        if (message.data.recovered === false) this.resumes.incomplete += 1;
        const {topic, epoch, seq, recovered} = message.data;
        if (recovered !== true) {
          // The subscription starts where the server says: a drop before the first
          // message resumes from here; the retained last values that follow are older.
          if (typeof seq === "number") this.positions[topic] = {epoch, seq, retained: true};
          else delete this.positions[topic];
        }
      }
      if (message.topic) {
        const last = this.positions[message.topic];
        if (last && typeof message.seq === "number" && last.epoch === message.epoch
            && message.seq <= last.seq) {
          if (!last.retained) return;  // already seen (replay overlap)
        } else {
          this.track(message);
        }
      }
    }
    this.onMessage(message);
  }

  track(message) {
    if (typeof message.seq !== "number") {
      // Delivered without a position (the shim's legacy side during a migration):
      // the topic's seq moves on meanwhile, so the next numbered one is no gap.
      delete this.positions[message.topic];
      return;
    }
    const last = this.positions[message.topic];
    if (last && last.epoch === message.epoch && message.seq > last.seq + 1) this.gaps += 1;
    this.positions[message.topic] = {epoch: message.epoch, seq: message.seq};
  }

  close() {
    this.closedByUser = true;
    clearTimeout(this.reconnectTimer);
    if (this.ws) this.ws.close(1000);
  }
}

window.WsClient = WsClient;
