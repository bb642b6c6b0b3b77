// telegram.js: the clawguard test bed's stand-in for the Telegram Bot API, run inside a
// sandbox with the agent's own Node.js. The real OpenClaw talks to it when its config has
// channels.telegram.apiRoot = "http://127.0.0.1:PORT" (every version from 2026.3 on).
//
//   node /usr/lib/clawguard-testbed/telegram.js PORT LOGFILE [UPDATE_ID...]
//
// Each UPDATE_ID is delivered once, as a private text message, to the first getUpdates
// whose offset does not already skip it. Every call is appended to LOGFILE as one JSON
// line {"method", "offset", "at"}, so a test reads which offset the agent asked for:
// the agent resumes from the offset it stored, which is what a pod restart must not lose.
"use strict";
const http = require("http");
const fs = require("fs");

const [port, logFile, ...ids] = process.argv.slice(2);
let pending = ids.map(Number);

function log(method, offset) {
  fs.appendFileSync(logFile, JSON.stringify({ method, offset, at: Date.now() / 1000 }) + "\n");
}

function message(id) {
  const now = Math.floor(Date.now() / 1000);
  const user = { id: 42, is_bot: false, first_name: "Test" };
  return {
    update_id: id,
    message: { message_id: id, date: now, chat: { id: 42, type: "private", first_name: "Test" }, from: user, text: "hello" },
  };
}

http
  .createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      const url = new URL(req.url, "http://127.0.0.1");
      const method = url.pathname.split("/").pop();
      const params = Object.fromEntries(url.searchParams);
      try {
        const type = req.headers["content-type"] || "";
        if (body) Object.assign(params, type.includes("json") ? JSON.parse(body) : Object.fromEntries(new URLSearchParams(body)));
      } catch (_) {}
      const offset = params.offset === undefined ? null : Number(params.offset);
      log(method, offset);
      const answer = (result) => {
        const data = JSON.stringify({ ok: true, result });
        res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(data) });
        res.end(data);
      };
      if (method === "getMe") return answer({ id: 123456789, is_bot: true, first_name: "Fake", username: "fake_bot" });
      if (method === "getWebhookInfo") return answer({ url: "", has_custom_certificate: false, pending_update_count: 0 });
      if (method === "getMyCommands") return answer([]);
      if (method === "sendMessage") return answer({ message_id: 1, date: Math.floor(Date.now() / 1000), chat: { id: 42, type: "private" }, text: params.text || "" });
      if (method !== "getUpdates") return answer(true);
      const due = pending.filter((id) => offset === null || id >= offset);
      pending = pending.filter((id) => !due.includes(id));
      if (due.length) return answer(due.map(message));
      setTimeout(() => answer([]), 1000 * Math.min(Number(params.timeout) || 0, 2));
    });
  })
  .listen(Number(port), "127.0.0.1");
