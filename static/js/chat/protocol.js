// The chat socket's protocol, without the page.
//
// One connection per tab, reconnecting with backoff; per answer, the sequence numbers
// that let a tab resume without losing or repeating text. Nothing here touches the DOM:
// the socket constructor, the URL, the timers and the callbacks come from the caller, so
// node can drive it with a fake socket (tests/js/).
//
// Frames (DESIGN.md, "External contract"; built in the server's frames module): `delta`
// {message, seq, text}, `snapshot` {message, seq, text} (the saved text whole, up to its
// seq), and the final `done` / `error` {message, seq: last + 1, ...}. A frame without a
// seq is a reply to a command (an `error` refusing a Stop, say), not part of the stream.

export const LIVE_STATUSES = new Set(["pending", "streaming"]);
export const RECONNECT_MIN_MS = 250;
export const RECONNECT_MAX_MS = 5000;
export const GAP_TIMEOUT_MS = 3000;
// A live answer that sent nothing (not even a thinking heartbeat) for this long has lost
// its frames somewhere (a dropped pub/sub message, a Redis restart): the tab resumes it
// by itself.
export const SILENT_RESUME_MS = 30_000;

// Closes after which reconnecting cannot help: 4401 the session ended, 4403 the
// account's access changed, 4429 over MAX_SOCKETS_PER_USER.
export const FINAL_CLOSE_CODES = new Set([4401, 4403, 4429]);

const OPEN = 1; // WebSocket.OPEN

export function resumeFrame(messageId, afterSeq) {
  return { type: "resume", message: messageId, after_seq: afterSeq };
}

/** Whether a frame has a place in an answer's stream (a seq), rather than replying to a command. */
export function isSequenced(frame) {
  return frame.seq !== undefined && frame.seq !== null;
}

/** Ask again for every live answer from the last seq it holds (after a (re)connect). */
export function resumeLive(streams) {
  for (const stream of streams) if (stream.live) stream.resume();
}

const noop = () => {};

export class Connection {
  /**
   * @param {object} options
   * @param {string} options.url the socket's address (ws: or wss:)
   * @param {Function} options.WebSocket the socket constructor
   * @param {object} [options.timers] setTimeout / clearTimeout (the global ones by default)
   * @param {Function} [options.random] for the backoff's jitter
   * @param {Function} [options.onFrame] each parsed frame (an object)
   * @param {Function} [options.onResume] on open, before queued frames go out: resume live answers
   * @param {Function} [options.onOpen] on open, after queued frames went out
   * @param {Function} [options.onClose] (event, {final}); final closes never reconnect
   * @param {Function} [options.onState] (state, message): connecting, open, reconnecting, closed
   */
  constructor({
    url, WebSocket, timers = globalThis, random = Math.random,
    onFrame = noop, onResume = noop, onOpen = noop, onClose = noop, onState = noop,
  }) {
    this.url = url;
    this.WebSocket = WebSocket;
    this.timers = timers;
    this.random = random;
    this.hooks = { onFrame, onResume, onOpen, onClose, onState };
    this.socket = null;
    this.queue = [];
    this.attempt = 0;
    this.timer = null;
    this.stopped = false;
    this.state = null;
  }

  start() {
    this.open();
  }

  get isOpen() {
    return Boolean(this.socket && this.socket.readyState === OPEN);
  }

  open() {
    if (this.stopped) return;
    this.timer = null;
    this.setState(this.attempt ? "reconnecting" : "connecting");
    let socket;
    try {
      socket = new this.WebSocket(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    socket.addEventListener("open", () => {
      if (socket !== this.socket) return;
      this.attempt = 0;
      this.setState("open");
      this.hooks.onResume();
      const queued = this.queue.splice(0);
      for (const frame of queued) this.rawSend(frame);
      this.hooks.onOpen();
    });
    socket.addEventListener("message", (event) => {
      if (socket !== this.socket) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame && typeof frame === "object") this.hooks.onFrame(frame);
    });
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return;
      this.socket = null;
      this.closed(event);
    });
  }

  closed(event) {
    const final = FINAL_CLOSE_CODES.has(event.code);
    if (final) this.stopped = true;
    this.hooks.onClose(event, { final });
    if (!final) this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (this.stopped || this.timer !== null) return;
    const base = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** this.attempt);
    const delay = Math.round(base * (0.75 + this.random() * 0.25));
    this.attempt += 1;
    this.setState("reconnecting");
    this.timer = this.timers.setTimeout(() => this.open(), delay);
  }

  /** Drop the socket (if any) and open a fresh one now, skipping the backoff. */
  reconnectNow() {
    if (this.stopped) return;
    if (this.timer !== null) {
      this.timers.clearTimeout(this.timer);
      this.timer = null;
    }
    const old = this.socket;
    this.socket = null;
    if (old) {
      try {
        old.close();
      } catch {
        // already closing
      }
    }
    this.attempt = Math.max(this.attempt, 1);
    this.open();
  }

  /**
   * Send a frame now if the socket is open; returns whether it went out. With `queue`,
   * a frame that could not go out is sent on the next open, except a `send` (the
   * composer keeps its own unsent message and sends it itself, once).
   */
  send(frame, { queue = false } = {}) {
    if (this.isOpen) return this.rawSend(frame);
    if (queue && frame.type !== "send") this.queue.push(frame);
    return false;
  }

  rawSend(frame) {
    try {
      this.socket.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  setState(state, message) {
    this.state = state;
    this.hooks.onState(state, message);
  }
}

/**
 * One answer's place in its stream: applies its numbered frames once each and in
 * order, holds frames that arrive past a gap until the gap is filled, and asks the
 * server to resume from the last seq it holds.
 */
export class AnswerStream {
  /**
   * @param {object} options
   * @param {number} options.id the assistant message's id
   * @param {number} [options.lastSeq] the seq of the text the tab already shows
   * @param {boolean} [options.live] whether the answer is still being written
   * @param {Connection} options.connection where resume frames go (send, reconnectNow)
   * @param {Function} options.apply (frame) applies one frame, in order, exactly once
   * @param {object} [options.timers] setTimeout / clearTimeout
   * @param {Function} [options.now] the clock, in ms
   * @param {number} [options.gapTimeoutMs] how long a gap may stay open before reconnecting
   */
  constructor({
    id, lastSeq = 0, live = true, connection, apply,
    timers = globalThis, now = Date.now, gapTimeoutMs = GAP_TIMEOUT_MS,
  }) {
    this.id = id;
    this.lastSeq = Number(lastSeq) || 0;
    this.live = live;
    this.connection = connection;
    this.apply = apply;
    this.timers = timers;
    this.now = now;
    this.gapTimeoutMs = gapTimeoutMs;
    this.buffered = new Map(); // seq → frame that arrived ahead of a gap
    this.gapTimer = null;
    this.lastHeard = now(); // when the server last said anything about this answer
  }

  /** The server said something about this answer (any frame): it is not silent. */
  heard() {
    this.lastHeard = this.now();
  }

  /** A numbered frame (delta, snapshot, final done / error). */
  receive(frame) {
    const seq = Number(frame.seq);
    if (!Number.isFinite(seq)) {
      this.applyInPlace(frame);
      return;
    }
    if (seq <= this.lastSeq) return; // already applied (replay overlap)
    // A snapshot carries the whole text up to its seq, so it may jump a gap.
    if (seq > this.lastSeq + 1 && frame.type !== "snapshot") {
      this.buffered.set(seq, frame);
      this.requestGapFill();
      return;
    }
    this.applyOne(frame);
    while (this.buffered.size) {
      const next = this.buffered.get(this.lastSeq + 1);
      for (const key of this.buffered.keys()) if (key <= this.lastSeq) this.buffered.delete(key);
      if (!next) break;
      this.buffered.delete(this.lastSeq + 1);
      this.applyOne(next);
    }
    if (!this.buffered.size) this.clearGap();
  }

  /** A frame without a place in the stream, applied at the seq the tab holds. */
  applyInPlace(frame) {
    this.applyOne({ ...frame, seq: this.lastSeq });
  }

  applyOne(frame) {
    this.lastSeq = Math.max(this.lastSeq, Number(frame.seq));
    if (frame.type === "snapshot") {
      for (const key of this.buffered.keys()) if (key <= this.lastSeq) this.buffered.delete(key);
    }
    this.apply(frame);
  }

  requestGapFill() {
    if (this.gapTimer !== null) return;
    this.connection.send(resumeFrame(this.id, this.lastSeq));
    // The server skips frames it believes this socket already has; if the hole is still
    // open after a while, a fresh socket resumes from our own count instead.
    this.gapTimer = this.timers.setTimeout(() => {
      this.gapTimer = null;
      if (this.buffered.size) this.connection.reconnectNow();
    }, this.gapTimeoutMs);
  }

  clearGap() {
    if (this.gapTimer !== null) this.timers.clearTimeout(this.gapTimer);
    this.gapTimer = null;
  }

  /** Ask for everything after the last seq held (on a fresh socket). */
  resume() {
    this.clearGap();
    return this.connection.send(resumeFrame(this.id, this.lastSeq));
  }

  /** Resume a live answer the server has said nothing about for `silenceMs`; true if asked. */
  resumeIfSilent(silenceMs, now = this.now()) {
    if (!this.live || now - this.lastHeard < silenceMs) return false;
    this.lastHeard = now; // ask again after another silent period, not every second
    this.connection.send(resumeFrame(this.id, this.lastSeq));
    return true;
  }

  /** The answer ended: nothing more is expected, held or waited for. */
  finish() {
    this.clearGap();
    this.buffered.clear();
    this.live = false;
  }
}
