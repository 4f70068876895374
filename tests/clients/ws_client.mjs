// A strict WebSocket client (Node's `ws`) for the compressed fan-out tests.
//
//   node ws_client.mjs '<json config>'
//
// Config: {url, count, shas, deflate, chatter, pauseAfter, pauseMs}
//   deflate     ws's perMessageDeflate option (false: offer no compression)
//   shas        SHA-256 (hex) of each kind's padding: every broadcast is checked
//   chatter     envelope pings and subscribe requests sent while the burst arrives,
//               plus protocol-level pings (each must get its pong)
//   pauseAfter  stop reading the socket (ws.pause()) after this many broadcasts,
//               for pauseMs, then resume
//
// stdout gets one JSON line {"event":"ready", ...} once subscribed (the test then
// broadcasts), then {"event":"done", ...} with what arrived: broadcast numbers in
// order, bad paddings, replies, pongs, the negotiated extensions, the bytes read
// from the socket and the text bytes they carried, and the close code if the
// server closed. ws itself rejects any frame that breaks RFC 6455/7692 (bad RSV1,
// bad lengths, bad UTF-8, a broken deflate stream): that ends here as an error.
import { createHash } from "node:crypto";
import WebSocket from "ws";

const config = JSON.parse(process.argv[2]);
const out = (value) => process.stdout.write(JSON.stringify(value) + "\n");

const ws = new WebSocket(config.url, {
  perMessageDeflate: config.deflate,
  maxPayload: 0,
  skipUTF8Validation: false,
});
const result = {
  event: "done",
  numbers: [],
  bad: 0,
  replies: [],
  pongs: 0,
  extensions: null,
  wireBytes: 0,
  textBytes: 0,
  closeCode: null,
  error: null,
  paused: false,
};
let ready = false;
let finished = false;
let pingsSent = 0;
const chatter = config.chatter ?? 0;

function finish() {
  if (finished) return;
  finished = true;
  out(result);
  ws.terminate();
  setTimeout(() => process.exit(0), 50);
}

function complete() {
  return (
    result.numbers.length >= config.count &&
    result.replies.length >= 2 * chatter &&
    result.pongs >= chatter
  );
}

function talk(i) {
  if (i >= chatter || finished) return;
  ws.send(JSON.stringify({ type: "ping", id: `p${i}` }));
  ws.send(JSON.stringify({ type: "subscribe", data: { topic: `x${i}` }, id: `s${i}` }));
  ws.ping(Buffer.from(`keepalive ${i}`));
  pingsSent += 1;
  setTimeout(() => talk(i + 1), 2);
}

let socket = null;
ws.on("upgrade", (response) => {
  result.extensions = response.headers["sec-websocket-extensions"] ?? null;
  socket = response.socket;
});

ws.on("open", () => {
  // Only now: a listener added at "upgrade" would take the bytes that came with
  // the handshake response (the first frames) before ws reads them.
  socket.on("data", (chunk) => {
    result.wireBytes += chunk.length;
  });
});

ws.on("pong", () => {
  result.pongs += 1;
  if (complete()) finish();
});

ws.on("message", (data, isBinary) => {
  if (isBinary) {
    result.error = "unexpected binary frame";
    finish();
    return;
  }
  const text = data.toString("utf8");
  const message = JSON.parse(text);
  if (!ready) {
    if (message.type === "connection_established") {
      ws.send(JSON.stringify({ type: "ping", id: "ready" }));
    } else if (message.type === "pong" && message.id === "ready") {
      ready = true;
      out({ event: "ready", extensions: result.extensions });
      talk(0);
    }
    return;
  }
  if (message.type !== "custom") {
    result.replies.push(message.id ?? message.type);
  } else {
    result.textBytes += data.length;
    const pad = message.data.pad;
    const digest = createHash("sha256").update(pad, "utf8").digest("hex");
    if (digest !== config.shas[message.data.kind]) result.bad += 1;
    result.numbers.push(message.data.n);
    if (config.pauseAfter !== undefined && result.numbers.length === config.pauseAfter) {
      result.paused = true;
      ws.pause();
      setTimeout(() => ws.resume(), config.pauseMs ?? 1000);
    }
  }
  if (complete()) finish();
});

ws.on("close", (code) => {
  result.closeCode = code;
  finish();
});

ws.on("error", (error) => {
  result.error = String(error && error.message ? error.message : error);
  finish();
});

setTimeout(() => {
  result.error = result.error ?? "timed out";
  finish();
}, config.timeoutMs ?? 30000);
