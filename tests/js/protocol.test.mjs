// static/js/chat/protocol.js driven through a fake socket and fake timers: the order,
// gaps, duplicates, snapshots and resumes of an answer's frames, and the connection's
// reconnects. Frame shapes follow the server's frames module (delta_frame,
// snapshot_frame, final_frame, error_frame) and DESIGN.md's websocket contract.

import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";

import {
  AnswerStream,
  Connection,
  GAP_TIMEOUT_MS,
  RECONNECT_MAX_MS,
  RECONNECT_MIN_MS,
  isSequenced,
  resumeLive,
} from "../../static/js/chat/protocol.js";

// --- Fakes -------------------------------------------------------------------------------

class FakeTimers {
  constructor() {
    this.now = 0;
    this.nextId = 1;
    this.pending = new Map(); // id → {at, fn}
  }

  setTimeout(fn, ms) {
    const id = this.nextId++;
    this.pending.set(id, { at: this.now + ms, fn });
    return id;
  }

  clearTimeout(id) {
    this.pending.delete(id);
  }

  /** Move the clock on, running each timer that falls due, earliest first. */
  advance(ms) {
    const end = this.now + ms;
    for (;;) {
      const due = [...this.pending.entries()]
        .filter(([, timer]) => timer.at <= end)
        .sort((a, b) => a[1].at - b[1].at || a[0] - b[0]);
      if (!due.length) break;
      const [id, timer] = due[0];
      this.pending.delete(id);
      this.now = timer.at;
      timer.fn();
    }
    this.now = end;
  }
}

/** A socket class whose instances the test opens, feeds and closes by hand. */
function fakeSocketClass() {
  return class FakeSocket {
    static OPEN = 1;
    static instances = [];

    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closed = false;
      this.listeners = {};
      FakeSocket.instances.push(this);
    }

    addEventListener(type, listener) {
      (this.listeners[type] ||= []).push(listener);
    }

    emit(type, event = {}) {
      for (const listener of this.listeners[type] || []) listener(event);
    }

    send(data) {
      if (this.readyState !== 1) throw new Error("InvalidStateError: not open");
      this.sent.push(JSON.parse(data));
    }

    close() {
      this.closed = true;
      this.readyState = 3;
    }

    // What the server and the network do:
    accept() {
      this.readyState = 1;
      this.emit("open");
    }

    deliver(frame) {
      this.emit("message", { data: typeof frame === "string" ? frame : JSON.stringify(frame) });
    }

    drop(code = 1006) {
      this.readyState = 3;
      this.emit("close", { code });
    }
  };
}

// --- Frames as the server builds them ----------------------------------------------------------

const MESSAGE = 41;

const delta = (seq, text, message = MESSAGE) => ({ type: "delta", message, seq, text });
const snapshot = (seq, text, message = MESSAGE) => ({ type: "snapshot", message, seq, text });
const done = (seq, message = MESSAGE) => ({
  type: "done",
  message,
  seq,
  status: "done",
  finish_reason: "stop",
  usage: { prompt_tokens: 12, cached_tokens: 0, completion_tokens: 30, reasoning_tokens: 8, cache_write_tokens: 0 },
  usage_estimated: false,
  cost_usd: "0.000321",
});
const failed = (seq, message = MESSAGE) => ({
  type: "error",
  message,
  seq,
  status: "interrupted",
  finish_reason: "",
  usage: { prompt_tokens: 12, cached_tokens: 0, completion_tokens: 4, reasoning_tokens: 0, cache_write_tokens: 0 },
  usage_estimated: true,
  cost_usd: "0.000040",
  code: "interrupted",
  detail: "The worker stopped while writing this answer.",
  partial: true,
});
const refused = (message = MESSAGE) => ({
  type: "error", message, code: "invalid_request", detail: "This answer has already ended.",
});

// --- A tab: one connection, answers keyed by message id -------------------------------------------

function makeTab({ answers = [[MESSAGE, { lastSeq: 0, live: true }]] } = {}) {
  const timers = new FakeTimers();
  const Socket = fakeSocketClass();
  const events = [];
  const streams = new Map();
  const shown = new Map(); // message id → {text, final, applied: [frames]}

  const connection = new Connection({
    url: "ws://testserver/ws/chat/",
    WebSocket: Socket,
    timers,
    random: () => 0.5,
    onFrame: (frame) => {
      const stream = streams.get(frame.message);
      if (!stream) return;
      stream.heard();
      if (isSequenced(frame) || frame.type === "delta" || frame.type === "snapshot") stream.receive(frame);
      else if (frame.type === "done" && stream.live) stream.applyInPlace(frame);
      else events.push(["command-error", frame.code]);
    },
    onResume: () => {
      events.push(["resume-hook"]);
      resumeLive(streams.values());
    },
    onOpen: () => events.push(["open-hook"]),
    onClose: (event, { final }) => events.push(["close", event.code, final]),
    onState: (state) => events.push(["state", state]),
  });

  for (const [id, { lastSeq, live, text = "" }] of answers) {
    const view = { text, final: null, applied: [] };
    shown.set(id, view);
    const stream = new AnswerStream({
      id,
      lastSeq,
      live,
      connection,
      timers,
      now: () => timers.now,
      apply: (frame) => {
        view.applied.push(frame.seq);
        if (frame.type === "delta") view.text += frame.text;
        else if (frame.type === "snapshot") view.text = frame.text;
        else {
          view.final = frame;
          stream.finish();
        }
      },
    });
    streams.set(id, stream);
  }

  const tab = {
    timers, Socket, events, streams, shown, connection,
    get socket() {
      return Socket.instances.at(-1);
    },
    stream: (id = MESSAGE) => streams.get(id),
    text: (id = MESSAGE) => shown.get(id).text,
    sent: () => Socket.instances.flatMap((s) => s.sent),
    resumes: () => Socket.instances.flatMap((s) => s.sent).filter((f) => f.type === "resume"),
    connect() {
      connection.start();
      tab.socket.accept();
      return tab.socket;
    },
  };
  return tab;
}

// --- Tests ---------------------------------------------------------------------------------

describe("an answer's frames in order", () => {
  let tab;
  beforeEach(() => {
    tab = makeTab();
    tab.connect();
  });

  test("deltas in order are applied once each and advance the seq", () => {
    tab.socket.deliver(delta(1, "Hel"));
    tab.socket.deliver(delta(2, "lo"));
    tab.socket.deliver(delta(3, "!"));
    assert.equal(tab.text(), "Hello!");
    assert.equal(tab.stream().lastSeq, 3);
    assert.deepEqual(tab.resumes().map((f) => f.after_seq), [0]); // only the one on open
  });

  test("a duplicate delta (a replay overlapping what the tab has) is dropped", () => {
    tab.socket.deliver(delta(1, "a"));
    tab.socket.deliver(delta(2, "b"));
    tab.socket.deliver(delta(2, "b"));
    tab.socket.deliver(delta(1, "a"));
    tab.socket.deliver(delta(3, "c"));
    assert.equal(tab.text(), "abc");
    assert.deepEqual(tab.shown.get(MESSAGE).applied, [1, 2, 3]);
  });

  test("the final done frame ends the answer: frames held past a gap are dropped, the gap timer stops", () => {
    tab.socket.deliver(delta(1, "Done soon"));
    tab.socket.deliver(delta(3, " held"));
    tab.socket.deliver(done(2));
    assert.equal(tab.text(), "Done soon");
    assert.equal(tab.shown.get(MESSAGE).final.cost_usd, "0.000321");
    assert.equal(tab.stream().live, false);
    assert.equal(tab.stream().lastSeq, 2);
    assert.equal(tab.stream().buffered.size, 0);
    tab.timers.advance(GAP_TIMEOUT_MS * 2);
    assert.equal(tab.Socket.instances.length, 1);
  });

  test("a final error frame keeps the partial text and ends the answer", () => {
    tab.socket.deliver(delta(1, "Part"));
    tab.socket.deliver(failed(2));
    assert.equal(tab.text(), "Part");
    assert.equal(tab.shown.get(MESSAGE).final.code, "interrupted");
    assert.equal(tab.stream().live, false);
  });

  test("a frame without a seq is a command's reply, applied at the seq the tab holds", () => {
    tab.socket.deliver(delta(1, "x"));
    tab.socket.deliver(refused());
    assert.deepEqual(tab.events.filter((e) => e[0] === "command-error"), [["command-error", "invalid_request"]]);
    const { seq: _seq, ...unsequencedDone } = done(0);
    tab.socket.deliver(unsequencedDone);
    assert.equal(tab.shown.get(MESSAGE).final.seq, 1);
    assert.equal(tab.stream().lastSeq, 1);
  });

  test("frames that are not JSON objects are ignored", () => {
    tab.socket.deliver("not json");
    tab.socket.deliver("42");
    tab.socket.deliver(delta(1, "ok"));
    assert.equal(tab.text(), "ok");
  });

  test("isSequenced tells stream frames from replies to commands", () => {
    assert.equal(isSequenced(delta(1, "a")), true);
    assert.equal(isSequenced(done(0)), true); // seq 0 is still a place in the stream
    assert.equal(isSequenced(refused()), false);
    assert.equal(isSequenced({ ...refused(), seq: null }), false);
  });
});

describe("out-of-order frames and gaps", () => {
  let tab;
  beforeEach(() => {
    tab = makeTab();
    tab.connect();
  });

  test("a frame past a gap waits, the tab asks to resume, and the gap fills in order", () => {
    tab.socket.deliver(delta(1, "one "));
    tab.socket.deliver(delta(3, "three "));
    tab.socket.deliver(delta(4, "four"));
    assert.equal(tab.text(), "one ");
    assert.equal(tab.stream().lastSeq, 1);
    // One resume for the gap, however many frames wait behind it.
    assert.deepEqual(tab.resumes().map((f) => f.after_seq), [0, 1]);
    assert.deepEqual(tab.resumes().at(-1), { type: "resume", message: MESSAGE, after_seq: 1 });

    tab.socket.deliver(delta(2, "two "));
    assert.equal(tab.text(), "one two three four");
    assert.equal(tab.stream().lastSeq, 4);
    assert.equal(tab.stream().buffered.size, 0);

    // The gap closed: its timer no longer reconnects.
    tab.timers.advance(GAP_TIMEOUT_MS * 2);
    assert.equal(tab.Socket.instances.length, 1);
  });

  test("frames arriving in reverse order are applied in seq order", () => {
    for (const seq of [5, 4, 3, 2]) tab.socket.deliver(delta(seq, String(seq)));
    assert.equal(tab.text(), "");
    tab.socket.deliver(delta(1, "1"));
    assert.equal(tab.text(), "12345");
    assert.deepEqual(tab.shown.get(MESSAGE).applied, [1, 2, 3, 4, 5]);
  });

  test("a final frame held behind a gap ends the answer once the gap fills", () => {
    tab.socket.deliver(delta(1, "a"));
    tab.socket.deliver(done(3));
    assert.equal(tab.shown.get(MESSAGE).final, null);
    tab.socket.deliver(delta(2, "b"));
    assert.equal(tab.text(), "ab");
    assert.equal(tab.shown.get(MESSAGE).final.type, "done");
    assert.equal(tab.stream().live, false);
  });

  test("a gap still open after the timeout makes a fresh socket that resumes from the tab's count", () => {
    tab.socket.deliver(delta(1, "a"));
    tab.socket.deliver(delta(3, "c"));
    const first = tab.socket;
    tab.timers.advance(GAP_TIMEOUT_MS - 1);
    assert.equal(tab.Socket.instances.length, 1);
    tab.timers.advance(1);
    assert.equal(first.closed, true);
    assert.equal(tab.Socket.instances.length, 2);

    tab.socket.accept();
    assert.deepEqual(tab.socket.sent, [{ type: "resume", message: MESSAGE, after_seq: 1 }]);
    // The server replays from after_seq 1: 2 fills the gap, 3 is then a duplicate.
    tab.socket.deliver(delta(2, "b"));
    tab.socket.deliver(delta(3, "c"));
    tab.socket.deliver(delta(4, "d"));
    assert.equal(tab.text(), "abcd");
  });

  test("frames from a socket that was replaced are ignored", () => {
    tab.socket.deliver(delta(1, "a"));
    const old = tab.socket;
    tab.connection.reconnectNow();
    old.deliver(delta(2, "stale"));
    old.drop();
    assert.equal(tab.text(), "a");
    assert.equal(tab.events.filter((e) => e[0] === "close").length, 0);
  });
});

describe("snapshots", () => {
  let tab;
  beforeEach(() => {
    tab = makeTab();
    tab.connect();
  });

  test("a snapshot jumps a gap: the saved text replaces the shown text up to its seq", () => {
    tab.socket.deliver(delta(1, "Hel"));
    tab.socket.deliver(delta(9, "?")); // waits behind a gap
    tab.socket.deliver(snapshot(7, "Hello, wor"));
    assert.equal(tab.text(), "Hello, wor");
    assert.equal(tab.stream().lastSeq, 7);
    assert.deepEqual([...tab.stream().buffered.keys()], [9]);
    tab.socket.deliver(delta(8, "ld"));
    assert.equal(tab.text(), "Hello, world?");
    assert.equal(tab.stream().buffered.size, 0);
  });

  test("frames held at or below the snapshot's seq are dropped, the next one applies", () => {
    tab.socket.deliver(delta(3, "old three"));
    tab.socket.deliver(delta(5, "old five"));
    tab.socket.deliver(delta(7, " seven"));
    tab.socket.deliver(snapshot(6, "one to six"));
    assert.equal(tab.text(), "one to six seven");
    assert.equal(tab.stream().lastSeq, 7);
    assert.equal(tab.stream().buffered.size, 0);
  });

  test("a snapshot older than what the tab holds is ignored", () => {
    tab.socket.deliver(delta(1, "a"));
    tab.socket.deliver(delta(2, "b"));
    tab.socket.deliver(snapshot(1, "a"));
    assert.equal(tab.text(), "ab");
    assert.equal(tab.stream().lastSeq, 2);
  });

  test("an empty snapshot (an answer with no text yet) is applied", () => {
    tab.socket.deliver(snapshot(0, ""));
    tab.socket.deliver(snapshot(2, ""));
    assert.equal(tab.text(), "");
    assert.equal(tab.stream().lastSeq, 2);
  });
});

describe("resume and reconnect", () => {
  test("on open the tab resumes every live answer from its last seq, not the ended ones", () => {
    const tab = makeTab({
      answers: [
        [41, { lastSeq: 12, live: true, text: "twelve" }],
        [42, { lastSeq: 30, live: false, text: "ended" }],
        [43, { lastSeq: 0, live: true }],
      ],
    });
    tab.connect();
    assert.deepEqual(tab.socket.sent, [
      { type: "resume", message: 41, after_seq: 12 },
      { type: "resume", message: 43, after_seq: 0 },
    ]);
  });

  test("after a drop the tab reconnects with backoff and resumes where it stopped; the replay overlap is dropped", () => {
    const tab = makeTab();
    tab.connect();
    tab.socket.deliver(delta(1, "a"));
    tab.socket.deliver(delta(2, "b"));
    tab.socket.deliver(delta(3, "c"));
    tab.socket.drop(1006);
    assert.deepEqual(tab.events.filter((e) => e[0] === "close"), [["close", 1006, false]]);
    assert.equal(tab.connection.state, "reconnecting");

    // First retry after RECONNECT_MIN_MS scaled by the jitter (0.75 + 0.5 * 0.25).
    const delay = Math.round(RECONNECT_MIN_MS * 0.875);
    tab.timers.advance(delay - 1);
    assert.equal(tab.Socket.instances.length, 1);
    tab.timers.advance(1);
    assert.equal(tab.Socket.instances.length, 2);

    tab.socket.accept();
    assert.deepEqual(tab.socket.sent, [{ type: "resume", message: MESSAGE, after_seq: 3 }]);
    // The replay buffer holds from 2 on, and the live stream carries on.
    for (const frame of [delta(2, "b"), delta(3, "c"), delta(4, "d"), done(5)]) tab.socket.deliver(frame);
    assert.equal(tab.text(), "abcd");
    assert.equal(tab.shown.get(MESSAGE).final.seq, 5);
  });

  test("the backoff doubles per failed attempt, up to the cap, and resets once open", () => {
    const tab = makeTab();
    tab.connection.start();
    const delays = [];
    for (let i = 0; i < 8; i += 1) {
      tab.socket.drop();
      const [timer] = [...tab.timers.pending.values()];
      delays.push(timer.at - tab.timers.now);
      tab.timers.advance(timer.at - tab.timers.now);
    }
    const expected = [0, 1, 2, 3, 4, 5, 6, 7].map(
      (n) => Math.round(Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** n) * 0.875),
    );
    assert.deepEqual(delays, expected);
    tab.socket.accept();
    assert.equal(tab.connection.attempt, 0);
  });

  test("resume hook, queued frames, then the open hook, in that order", () => {
    const tab = makeTab();
    tab.connection.start();
    assert.equal(tab.connection.send({ type: "stop", message: MESSAGE }, { queue: true }), false);
    assert.equal(tab.connection.send({ type: "send", content: "hi" }, { queue: true }), false);
    assert.equal(tab.connection.send({ type: "select", message: 7 }), false);
    tab.socket.accept();
    assert.deepEqual(tab.socket.sent, [
      { type: "resume", message: MESSAGE, after_seq: 0 },
      { type: "stop", message: MESSAGE }, // queued; the unqueued select and the send are not
    ]);
    const hooks = tab.events.filter((e) => e[0].endsWith("-hook")).map((e) => e[0]);
    assert.deepEqual(hooks, ["resume-hook", "open-hook"]);
    assert.equal(tab.connection.send({ type: "select", message: 7 }), true);
  });

  for (const code of [4401, 4403, 4429]) {
    test(`a close with ${code} is final: no reconnect`, () => {
      const tab = makeTab();
      tab.connect();
      tab.socket.drop(code);
      assert.deepEqual(tab.events.filter((e) => e[0] === "close"), [["close", code, true]]);
      tab.timers.advance(60_000);
      assert.equal(tab.Socket.instances.length, 1);
      tab.connection.reconnectNow(); // e.g. the browser came back online
      assert.equal(tab.Socket.instances.length, 1);
    });
  }

  test("a socket constructor that throws is retried later", () => {
    const tab = makeTab();
    let failures = 1;
    const Throwing = class extends tab.Socket {
      constructor(url) {
        if (failures-- > 0) throw new Error("SecurityError");
        super(url);
      }
    };
    tab.connection.WebSocket = Throwing;
    tab.connection.start();
    assert.equal(tab.Socket.instances.length, 0);
    assert.equal(tab.connection.state, "reconnecting");
    tab.timers.advance(RECONNECT_MAX_MS);
    assert.equal(tab.Socket.instances.length, 1);
  });

  test("reconnectNow skips a pending backoff and opens at once", () => {
    const tab = makeTab();
    tab.connect();
    tab.socket.drop();
    assert.equal(tab.timers.pending.size, 1);
    tab.connection.reconnectNow();
    assert.equal(tab.timers.pending.size, 0);
    assert.equal(tab.Socket.instances.length, 2);
  });
});

describe("silent answers", () => {
  test("a live answer the server said nothing about for the allowed silence is resumed, once per period", () => {
    const tab = makeTab();
    tab.connect();
    tab.socket.deliver(delta(1, "a"));
    tab.timers.advance(999);
    assert.equal(tab.stream().resumeIfSilent(1000, tab.timers.now), false);
    tab.timers.advance(1);
    assert.equal(tab.stream().resumeIfSilent(1000, tab.timers.now), true);
    assert.deepEqual(tab.resumes().at(-1), { type: "resume", message: MESSAGE, after_seq: 1 });
    assert.equal(tab.stream().resumeIfSilent(1000, tab.timers.now), false);
    // Any frame about the answer (a thinking heartbeat included) counts as hearing from it.
    tab.timers.advance(900);
    tab.stream().heard();
    tab.timers.advance(900);
    assert.equal(tab.stream().resumeIfSilent(1000, tab.timers.now), false);
  });

  test("an ended answer is never resumed", () => {
    const tab = makeTab();
    tab.connect();
    tab.socket.deliver(done(1));
    tab.timers.advance(60_000);
    assert.equal(tab.stream().resumeIfSilent(1000, tab.timers.now), false);
  });
});
