// A feed-server reader written from docs/redis-contract.md alone, as a team in another
// language would: it knows nothing of the Python code. tests/integration/test_contract_node.py
// runs it against records the Python writer wrote, with the reader ACL the page prescribes.
//
//   node reader.mjs get URL PREFIX USER...        one line per user: {"user", "record"|"problem"}
//   node reader.mjs follow URL STREAM COUNT       "ready" once following, then one line per
//                                                 notification until COUNT arrived
//   node reader.mjs group URL STREAM GROUP COUNT  the same through a consumer group (XACKed)
//   node reader.mjs ping URL                      PING
import { createClient } from "redis";

const [mode, url, ...rest] = process.argv.slice(2);
const out = (value) => process.stdout.write(JSON.stringify(value) + "\n");
// The page: give up on a connection error rather than retrying forever.
const client = createClient({ url, socket: { reconnectStrategy: false, connectTimeout: 5000 } });
client.on("error", (err) => {
  process.stderr.write(`redis error: ${err.message}\n`);
  process.exit(2);
});
await client.connect();

// "Key of a user": PREFIX:{USER_ID}, the id's exact UTF-8, braces literal.
const keyOf = (prefix, user) => `${prefix}:{${user}}`;
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const VERDICTS = new Set(["good", "average", "bad", "unjudged"]);
const SOURCES = new Set(["llm", "cache", "live"]);
const WORDINGS = new Set(["llm", "code"]);
const codePoints = (s) => [...s].length; // lengths are in Unicode code points, not UTF-16 units

// "What makes a record corrupt", rule by rule. Returns null when the record is good.
function problemOf(user, record) {
  if (record === null || typeof record !== "object" || Array.isArray(record)) return "not a JSON object";
  if (record.schema_version !== 1) return `unknown schema_version ${JSON.stringify(record.schema_version)}`;
  if (record.user_id !== user) return `record belongs to user ${JSON.stringify(record.user_id)}`;
  for (const name of ["version", "context_version"]) {
    if (!Number.isInteger(record[name]) || record[name] < 1) return `${name} is not an integer >= 1`;
  }
  if (typeof record.trigger !== "string" || record.trigger === "") return "trigger is not a string";
  if (!Array.isArray(record.tags) || record.tags.length < 1 || record.tags.length > 10) {
    return "tags is not an array of 1-10 entries";
  }
  for (const t of record.tags) {
    if (t === null || typeof t !== "object") return "a tag is not an object";
    if (typeof t.tag !== "string" || codePoints(t.tag) < 1 || codePoints(t.tag) > 48) return "a tag's text is malformed";
    if (typeof t.explanation !== "string" || codePoints(t.explanation) < 1 || codePoints(t.explanation) > 200) {
      return "a tag's explanation is malformed";
    }
    // Optional: absent in records written before it existed (read as "llm").
    if (t.source !== undefined && !SOURCES.has(t.source)) return "a tag's source is unknown";
    if (t.last_seen !== undefined && !RFC3339.test(String(t.last_seen))) return "a tag's last_seen is malformed";
    if (t.wording !== undefined && !WORDINGS.has(t.wording)) return "a tag's wording is unknown";
    if (t.items !== undefined) {
      const ok = Array.isArray(t.items) && t.items.length <= 20 &&
        t.items.every((i) => typeof i === "string" && codePoints(i) >= 1 && codePoints(i) <= 128);
      if (!ok) return "a tag's items are malformed";
    }
  }
  for (const name of ["event_time", "planned_at"]) {
    if (typeof record[name] !== "string" || !RFC3339.test(record[name])) return `${name} is not an RFC 3339 time`;
  }
  if (record.written_at !== undefined && !RFC3339.test(String(record.written_at))) return "written_at is malformed";
  if (typeof record.model !== "string") return "model is not a string";
  if (!VERDICTS.has(record.verdict)) return "verdict is unknown";
  for (const name of ["co_viewed", "category_popular"]) {
    const ids = record[name];
    if (ids === undefined) continue;
    const ok = Array.isArray(ids) && ids.length <= 50 &&
      ids.every((i) => typeof i === "string" && codePoints(i) >= 1 && codePoints(i) <= 128);
    if (!ok) return `${name} is malformed`;
  }
  const llm = record.llm_context_version;
  if (llm !== undefined && (!Number.isInteger(llm) || llm < 1)) return "llm_context_version is not an integer >= 1";
  return null;
}

function lookup(user, raw, hashVersion) {
  if (raw === null || raw === undefined) return { user, record: null }; // no current intents
  let record;
  try {
    record = JSON.parse(raw);
  } catch {
    return { user, problem: "record is not JSON" };
  }
  const problem = problemOf(user, record);
  if (problem) return { user, problem };
  if (hashVersion !== undefined && String(record.version) !== hashVersion) {
    return { user, problem: "hash version and record version differ" };
  }
  return { user, record };
}

if (mode === "get") {
  const [prefix, ...users] = rest;
  // "Many users: pipeline one HGET per user" (no MULTI; the reader ACL does not grant it).
  const replies = await Promise.all(users.map((u) => client.hGet(keyOf(prefix, u), "record")));
  users.forEach((u, i) => out(lookup(u, replies[i])));
  // With both fields: a record whose version differs from the hash's is corrupt too.
  const pairs = await Promise.all(users.map((u) => client.hmGet(keyOf(prefix, u), ["version", "record"])));
  users.forEach((u, i) => out({ both: lookup(u, pairs[i][1], pairs[i][0] ?? undefined) }));
} else if (mode === "follow") {
  const [stream, count] = rest;
  // The page's loop: pin "now" to the newest id once, then always continue from the last id
  // received (XREAD with "$" in a loop misses whatever arrives between two calls).
  const newest = await client.xRevRange(stream, "+", "-", { COUNT: 1 });
  let last = newest.length ? newest[0].id : "0-0";
  out("ready");
  let seen = 0;
  while (seen < Number(count)) {
    const reply = await client.xRead({ key: stream, id: last }, { BLOCK: 10000, COUNT: 500 });
    if (reply === null) throw new Error(`no notification for 10 s after ${seen}`);
    for (const entry of reply[0].messages) {
      last = entry.id;
      out({ id: entry.id, user: entry.message.user, version: Number(entry.message.version) });
      seen += 1;
    }
  }
} else if (mode === "group") {
  const [stream, group, count] = rest;
  try {
    await client.xGroupCreate(stream, group, "$", { MKSTREAM: false });
  } catch (err) {
    if (!String(err.message).includes("BUSYGROUP")) throw err;
  }
  out("ready");
  let seen = 0;
  while (seen < Number(count)) {
    const reply = await client.xReadGroup(group, "feed-1", { key: stream, id: ">" }, { BLOCK: 10000, COUNT: 500 });
    if (reply === null) throw new Error(`no notification for 10 s after ${seen}`);
    for (const entry of reply[0].messages) {
      out({ id: entry.id, user: entry.message.user, version: Number(entry.message.version) });
      await client.xAck(stream, group, entry.id);
      seen += 1;
    }
  }
} else if (mode === "ping") {
  out(await client.ping());
} else {
  throw new Error(`unknown mode ${mode}`);
}
await client.quit();
