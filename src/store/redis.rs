//! Redis backend (Upstash-compatible over `rediss://`). Every multi-step
//! update is a Lua script, so it is atomic without WATCH (which a shared,
//! multiplexed connection cannot use). Expiry decisions use the caller's
//! `now`; Redis TTLs only garbage-collect.

use std::borrow::Cow;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use super::{
    merge_values, ttl_millis, Deployment, DeploymentState, Doc, DocFilter, DocWrite, Ingest,
    Migration, RollupAdd, RollupRow, Store, StoreError, StoreResult, ALERT_KIND, MAX_CAS_ATTEMPTS,
};
use crate::core::audit::{AuditEntry, AuditRecord, GENESIS_HASH};
use crate::core::clock::Timestamp;

/// 2: audit records are indexed by subject (`audit:subj:<subject>` lists of seqs).
/// 3: alert states keep only the `all` and scope-and-status listing indexes
/// ([`slim_listing`]).
const SCHEMA_VERSION: u32 = 3;

/// Takes `KEYS[1]` for `ARGV[1]` (holder) if free, expired at `ARGV[2]`
/// (now), or already held by the same holder. The value is `expiry|holder`.
const ACQUIRE: &str = r"
local v = redis.call('GET', KEYS[1])
if v then
  local sep = string.find(v, '|', 1, true)
  local exp = tonumber(string.sub(v, 1, sep - 1))
  local holder = string.sub(v, sep + 1)
  if exp > tonumber(ARGV[2]) and holder ~= ARGV[1] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[3] .. '|' .. ARGV[1], 'PX', ARGV[4])
return 1
";

/// Deletes `KEYS[1]` only if `ARGV[1]` holds it.
const RELEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local sep = string.find(v, '|', 1, true)
if string.sub(v, sep + 1) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
";

/// Sets `KEYS[1]` to expiry `ARGV[2]` unless an unexpired claim exists at `ARGV[1]` (now).
const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if v and tonumber(v) > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// Appends `ARGV[3]` to the log if the head is still at `ARGV[1]`; sets the new head hash `ARGV[2]`.
/// `KEYS[3]` is the subject's index: the record's seq is pushed there too.
const APPEND_AUDIT: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if cur ~= tonumber(ARGV[1]) then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], 'seq', cur + 1, 'hash', ARGV[2])
redis.call('RPUSH', KEYS[3], cur + 1)
return 1
";

/// Stores deployment JSON `ARGV[1]` at `KEYS[1]` and indexes it in the
/// environment set `KEYS[2]` (score `ARGV[2]`, member `ARGV[3]`), removing it
/// from its old environment's set (`ARGV[4]` prefix) if it moved.
const UPSERT_DEPLOYMENT: &str = r"
local old = redis.call('GET', KEYS[1])
if old then
  local env = cjson.decode(old)['environment']
  local old_set = ARGV[4] .. env
  if old_set ~= KEYS[2] then redis.call('ZREM', old_set, ARGV[3]) end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
";

/// Lua shared by the scripts that write documents (PUT_DOC, FOLD_ALERTS): the
/// stored form and the listing indexes that `list_docs` reads, scored by
/// update time: all, by scope and status, and (unless `slim`, see
/// [`slim_listing`]) by scope and by status. The score goes to ZADD as the
/// text it arrived as: a Lua number would be formatted again ("%.17g") for
/// every index.
const DOC_LUA: &str = r"
local function unindex_doc(p, id, scope, status, slim)
  redis.call('ZREM', p .. 'st:' .. scope .. '|' .. status, id)
  if slim then return end
  redis.call('ZREM', p .. 's:' .. scope, id)
  redis.call('ZREM', p .. 't:' .. status, id)
end
local function index_doc(p, id, scope, status, updated, slim)
  redis.call('ZADD', p .. 'all', updated, id)
  redis.call('ZADD', p .. 'st:' .. scope .. '|' .. status, updated, id)
  if slim then return end
  redis.call('ZADD', p .. 's:' .. scope, updated, id)
  redis.call('ZADD', p .. 't:' .. status, updated, id)
end
local function write_doc(key, p, id, version, scope, status, updated, body, slim)
  redis.call('SET', key, cjson.encode({version = version, scope = scope, status = status, updated_at = updated, body = body}))
  index_doc(p, id, scope, status, updated, slim)
end
";

/// Compare-and-set write of document `KEYS[1]`. ARGV: expected version (''
/// for create), body JSON, index prefix, id, scope, status, updated_ms,
/// '1' if the kind's listing is slim.
/// Maintains the listing indexes ([`DOC_LUA`]). The body is kept as a string so cjson never
/// re-encodes (and rounds) its numbers.
const PUT_DOC: &str = r"
local cur = redis.call('GET', KEYS[1])
local version
local p = ARGV[3]
local slim = ARGV[8] == '1'
if cur then
  if ARGV[1] == '' then return 0 end
  local d = cjson.decode(cur)
  if tostring(d.version) ~= ARGV[1] then return 0 end
  version = d.version + 1
  unindex_doc(p, ARGV[4], d.scope, d.status, slim)
else
  if ARGV[1] ~= '' then return 0 end
  version = 1
end
write_doc(KEYS[1], p, ARGV[4], version, ARGV[5], ARGV[6], ARGV[7], ARGV[2], slim)
return version
";

/// Adds counters to hash `KEYS[1]` (ARGV pairs of name, value after the
/// first two), raising instead of adding for `max:` names, and records the
/// minute `ARGV[1]` in index `KEYS[2]`. `ARGV[2]` is the retention in ms.
const ADD_ROLLUP: &str = r"
for i = 3, #ARGV, 2 do
  local name, v = ARGV[i], tonumber(ARGV[i + 1])
  if string.sub(name, 1, 4) == 'max:' then
    local cur = tonumber(redis.call('HGET', KEYS[1], name) or '-inf')
    if v > cur then redis.call('HSET', KEYS[1], name, ARGV[i + 1]) end
  else
    redis.call('HINCRBYFLOAT', KEYS[1], name, ARGV[i + 1])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
";

/// Applies one logged alert write (its six fields, see INGEST) to the alert
/// state at `dk`, indexed as PUT_DOC indexes a slim kind. An alert keeps the
/// stored `first_seen` while the stored state is firing. The body arrives
/// as JSON text without `first_seen`/`last_seen`, and is extended as text
/// (never re-encoded, so it round-trips exactly).
const ALERT_LUA: &str = r#"
local function alert_body(first, at, body)
  local head = '{"first_seen":' .. first .. ',"last_seen":' .. at
  if body == '{}' then return head .. '}' end
  return head .. ',' .. string.sub(body, 2)
end
local function apply_alert(dk, p, id, scope, status, updated, at, body)
  local cur = redis.call('GET', dk)
  local version = 1
  local first = at
  -- An unreadable stored state is replaced, not a reason to fail the
  -- fold half-way (a script's earlier writes are not undone).
  local readable, doc = false, nil
  if cur then readable, doc = pcall(cjson.decode, cur) end
  if readable and type(doc) == 'table' and type(doc.scope) == 'string' and type(doc.status) == 'string' then
    version = (tonumber(doc.version) or 0) + 1
    if doc.status == 'firing' then
      local ok, b = pcall(cjson.decode, doc.body)
      if ok and type(b) == 'table' and type(b.first_seen) == 'number' then
        first = string.format('%d', b.first_seen)
      end
    end
    unindex_doc(p, id, doc.scope, doc.status, true)
  end
  write_doc(dk, p, id, version, scope, status, updated, alert_body(first, at, body), true)
end
"#;

/// A batch of intake deliveries in one atomic script (see `Store::ingest`).
/// `ARGV[1]` now, `ARGV[2]` a claim's expiry, `ARGV[3]` its TTL, `ARGV[4]`
/// the rollup retention, `ARGV[5]` the alert log's key, `ARGV[6]` the
/// number of deliveries. Each delivery then brings its counts (minutes,
/// alerts), its claim key, and for each minute a hash and index key with its
/// counters, for each alert its six alert log fields: id, scope, status,
/// updated, at and body (ALERT_LUA).
/// A delivery claims its key as CLAIM does and, only if claimed, adds its
/// counters (as ADD_ROLLUP does) and appends its alert writes to the alert
/// log, which FOLD_ALERTS applies to the alert states before they are read
/// (see [`RedisStore::fold_alert_log`]). A new claim is one `SET NX`; only
/// a held claim is read first. Deliveries apply in order, so a second
/// delivery of one key in the batch is a duplicate. Returns 1 (recorded)
/// or 0 (duplicate) per delivery.
const INGEST: &str = r#"
local now = tonumber(ARGV[1])
local log = ARGV[5]
local out = {}
local logged = {}
local a = 7
local k = 1
for d = 1, tonumber(ARGV[6]) do
  local minutes, alerts = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local take = true
  if not redis.call('SET', KEYS[k], ARGV[2], 'NX', 'PX', ARGV[3]) then
    -- Held, unless its expiry (by the guard's clock) has passed.
    local v = redis.call('GET', KEYS[k])
    take = not (v and tonumber(v) > now)
    if take then redis.call('SET', KEYS[k], ARGV[2], 'PX', ARGV[3]) end
  end
  k = k + 1
  out[d] = take and 1 or 0
  for m = 1, minutes do
    local minute, n = ARGV[a], tonumber(ARGV[a + 1])
    a = a + 2
    if take then
      for i = 1, n do
        local name, val = ARGV[a + 2 * i - 2], tonumber(ARGV[a + 2 * i - 1])
        if string.sub(name, 1, 4) == 'max:' then
          local cur = tonumber(redis.call('HGET', KEYS[k], name) or '-inf')
          if val > cur then redis.call('HSET', KEYS[k], name, ARGV[a + 2 * i - 1]) end
        else
          redis.call('HINCRBYFLOAT', KEYS[k], name, ARGV[a + 2 * i - 1])
        end
      end
      redis.call('PEXPIRE', KEYS[k], ARGV[4])
      redis.call('ZADD', KEYS[k + 1], minute, minute)
      redis.call('PEXPIRE', KEYS[k + 1], ARGV[4])
    end
    a = a + 2 * n
    k = k + 2
  end
  if take then
    for j = 0, alerts - 1 do
      for f = 0, 5 do logged[#logged + 1] = ARGV[a + 6 * j + f] end
      -- One RPUSH for many writes, within Lua's limit on unpacked values.
      if #logged >= 600 then
        redis.call('RPUSH', log, unpack(logged))
        logged = {}
      end
    end
  end
  a = a + 6 * alerts
end
if #logged > 0 then redis.call('RPUSH', log, unpack(logged)) end
return out
"#;

/// Applies the oldest alert writes of the alert log (`ARGV[1]`), at most
/// `ARGV[4]` of them, to the alert states (document keys `ARGV[3]` .. id,
/// index prefix `ARGV[2]`), in order; returns how many are left.
const FOLD_ALERTS: &str = r"
local log, p, dp = ARGV[1], ARGV[2], ARGV[3]
local n = redis.call('LLEN', log)
if n == 0 then return 0 end
local take = math.min(n, 6 * tonumber(ARGV[4]))
local e = redis.call('LRANGE', log, 0, take - 1)
redis.call('LTRIM', log, take, -1)
for i = 1, take - 5, 6 do
  apply_alert(dp .. e[i], p, e[i], e[i + 1], e[i + 2], e[i + 3], e[i + 4], e[i + 5])
end
return (n - take) / 6
";

/// Alert writes applied per FOLD_ALERTS call: a script blocks Redis while
/// it runs, so a backlog is folded in steps (500 new alerts take about 5 ms
/// on the 2-core benchmark machine; a write of a known alert costs more).
const FOLD_CHUNK: usize = 500;

/// How long Redis keeps rollups (evaluation looks back at most a few hours).
const ROLLUP_RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;

/// A document's stored form (what DOC_LUA's `write_doc` encodes), as the
/// guard reads it.
#[derive(Deserialize)]
struct DocJson<'a> {
    version: i64,
    #[serde(borrow)]
    scope: Cow<'a, str>,
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow)]
    updated_at: Cow<'a, str>,
    #[serde(borrow)]
    body: Cow<'a, str>,
}

// Scripts are hashed once; EVALSHA with EVAL fallback is handled by `Script`.
static ACQUIRE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));
static CLAIM_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIM));
static APPEND_AUDIT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(APPEND_AUDIT));
static UPSERT_DEPLOYMENT_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(UPSERT_DEPLOYMENT));
static PUT_DOC_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{DOC_LUA}{PUT_DOC}")));
static ADD_ROLLUP_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ADD_ROLLUP));
static INGEST_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(INGEST));
static FOLD_ALERTS_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{DOC_LUA}{ALERT_LUA}{FOLD_ALERTS}")));

/// Redis-backed [`Store`].
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
}

#[derive(Serialize, Deserialize)]
struct DeploymentJson {
    id: String,
    environment: String,
    url: String,
    state: String,
    git_sha: Option<String>,
    created_at: i64,
    updated_at: i64,
    meta: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct AuditJson {
    seq: i64,
    at: i64,
    actor: String,
    action: String,
    subject: String,
    detail: String,
    prev_hash: String,
    hash: String,
}

fn decode_audit(raw: &str) -> StoreResult<AuditRecord> {
    let j: AuditJson = serde_json::from_str(raw).map_err(|e| corrupt("audit record", e))?;
    Ok(AuditRecord {
        seq: j.seq,
        entry: AuditEntry {
            at: Timestamp::from_millis(j.at),
            actor: j.actor,
            action: j.action,
            subject: j.subject,
            detail: serde_json::from_str(&j.detail).map_err(|e| corrupt("audit detail", e))?,
        },
        prev_hash: j.prev_hash,
        hash: j.hash,
    })
}

fn redis_err(e: redis::RedisError) -> StoreError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Query(e.to_string())
    }
}

fn corrupt(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

impl RedisStore {
    /// Connects (with reconnects handled by the connection manager).
    pub async fn connect(
        url: &str,
        prefix: &str,
        timeouts: super::StoreTimeouts,
    ) -> StoreResult<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid REDIS_URL: {:?}", e.kind())))?;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(timeouts.connect)
            .set_response_timeout(timeouts.operation)
            // Reconnect attempts happen inside one bounded operation; a long
            // backoff would only be cut off by the operation timeout.
            .set_number_of_retries(1)
            .set_max_delay(200);
        let conn = client
            .get_connection_manager_with_config(cfg)
            .await
            .map_err(redis_err)?;
        Ok(Self {
            conn,
            prefix: prefix.to_string(),
        })
    }

    /// The alert log: alert writes that intake appended and
    /// [`Self::fold_alert_log`] has not applied yet.
    fn alert_log_key(&self) -> String {
        self.key(&["docs", ALERT_KIND, "log"])
    }

    /// Applies the alert log to the alert states, oldest first, in steps of
    /// [`FOLD_CHUNK`] writes (each one atomic script); nothing to apply is
    /// one call. Intake appends alert writes instead of applying them:
    /// measured side by side (`cargo bench --bench guard`), Redis's CPU per
    /// delivered alert at intake went from 16-22 µs to 10-12 µs, and the
    /// fold costs about 9-10 µs per new alert later. Reading and writing
    /// alert states folds first, and so does the claims-pruning cron, so
    /// the log stays short where nothing reads alert states.
    async fn fold_alert_log(&self) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        loop {
            let left: i64 = FOLD_ALERTS_SCRIPT
                .arg(self.alert_log_key())
                .arg(self.key(&["docs", ALERT_KIND, ""]))
                .arg(self.key(&["doc", ALERT_KIND, ""]))
                .arg(FOLD_CHUNK)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_err)?;
            if left == 0 {
                return Ok(());
            }
        }
    }

    /// Folds the alert log first if `kind` is alert states.
    async fn fold_before(&self, kind: &str) -> StoreResult<()> {
        if kind == ALERT_KIND {
            self.fold_alert_log().await?;
        }
        Ok(())
    }

    /// The `EVALSHA` of [`INGEST`] for `batch`, written in place: its keys
    /// (each delivery's claim, then each of its counters' two keys) and
    /// then its arguments, in the order the script reads them, each copied
    /// once into the command. A `ScriptInvocation` copies every key and
    /// argument into a vector of its own first, then all of them into the
    /// command. Built and packed in isolation, for a batch of 10 alerts
    /// (the same bytes either way): 420 against 250 ns per delivery.
    fn ingest_cmd(&self, batch: &[Ingest], now_ms: i64, ttl: i64) -> redis::Cmd {
        let keys: usize = batch.iter().map(|i| 1 + 2 * i.rollups.len()).sum();
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(INGEST_SCRIPT.get_hash()).arg(keys);
        let mut key = String::new();
        let mut add_key = |cmd: &mut redis::Cmd, parts: &[&str]| {
            key.clear();
            self.write_key(&mut key, parts);
            cmd.arg(key.as_str());
        };
        for item in batch {
            add_key(&mut cmd, &["once", &item.scope, &item.key]);
            for a in &item.rollups {
                let minute = a.minute.to_string();
                add_key(&mut cmd, &["roll", &a.environment, &a.deployment, &minute]);
                add_key(&mut cmd, &["rollmin", &a.environment, &a.deployment]);
            }
        }
        cmd.arg(now_ms)
            .arg(now_ms.saturating_add(ttl))
            .arg(ttl)
            .arg(ROLLUP_RETENTION_MS)
            .arg(self.alert_log_key())
            .arg(batch.len());
        for item in batch {
            cmd.arg(item.rollups.len()).arg(item.alerts.len());
            for a in &item.rollups {
                let merged = merge_values(&a.values);
                cmd.arg(a.minute).arg(merged.len());
                for (name, v) in &merged {
                    cmd.arg(name).arg(v.to_string());
                }
            }
            for w in &item.alerts {
                let status = if w.firing { "firing" } else { "resolved" };
                cmd.arg(&w.id)
                    .arg(&w.environment)
                    .arg(status)
                    .arg(now_ms)
                    .arg(w.at)
                    .arg(w.body.as_str());
            }
        }
        cmd
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = String::new();
        self.write_key(&mut k, parts);
        k
    }

    /// Appends the key of `parts` (this store's prefix, then the parts
    /// joined by `:`) to `out`.
    fn write_key(&self, out: &mut String, parts: &[&str]) {
        out.push_str(&self.prefix);
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                out.push(':');
            }
            out.push_str(part);
        }
    }

    /// Deletes every key under this store's prefix (tests, uninstall).
    pub async fn delete_all(&self) -> StoreResult<()> {
        self.delete_matching("*").await
    }

    /// The documents `ids` of `kind`, in that order (ids whose document is
    /// gone are left out).
    async fn docs_of(&self, kind: &str, ids: Vec<String>) -> StoreResult<Vec<Doc>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.key(&["doc", kind, id])).collect();
        let mut conn = self.conn.clone();
        let raw: Vec<Option<String>> = redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        ids.iter()
            .zip(raw)
            .filter_map(|(id, r)| r.map(|r| doc_from_json(kind, id, &r)))
            .collect()
    }

    /// `list_docs` of a [`slim_listing`] kind by scope or status alone:
    /// newest first from the `all` index, a page at a time, filtered.
    async fn list_docs_filtered(
        &self,
        kind: &str,
        filter: &DocFilter,
        limit: usize,
    ) -> StoreResult<Vec<Doc>> {
        let page = limit.clamp(100, 1000);
        let index = self.key(&["docs", kind, "all"]);
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            let ids: Vec<String> = conn
                .zrevrange(&index, start as isize, (start + page - 1) as isize)
                .await
                .map_err(redis_err)?;
            let last_page = ids.len() < page;
            for d in self.docs_of(kind, ids).await? {
                if filter.scope.as_ref().is_none_or(|s| *s == d.scope)
                    && filter.status.as_ref().is_none_or(|t| *t == d.status)
                {
                    out.push(d);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if last_page {
                return Ok(out);
            }
            start += page;
        }
    }

    /// Deletes this store's keys whose name after the prefix matches the
    /// glob `pattern`: one SCAN over the whole keyspace, 5,000 keys a call
    /// (each a millisecond or two of the server's time).
    async fn delete_matching(&self, pattern: &str) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}{pattern}", glob_escape(&self.prefix));
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(5_000)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            if !keys.is_empty() {
                let _: () = conn.del(keys).await.map_err(redis_err)?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

/// Kinds listed by the `all` and scope-and-status indexes only ([`DOC_LUA`]):
/// alert states, one per alert identity, written on every delivery. Their
/// readers (evaluation) list by scope and status; two more index writes
/// per alert cost about 3 µs of Redis's CPU, a seventh of a new alert's. A
/// listing by scope or status alone reads `all` and filters
/// ([`RedisStore::list_docs_filtered`]).
fn slim_listing(kind: &str) -> bool {
    kind == ALERT_KIND
}

/// `text` matched literally in a SCAN pattern.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn doc_from_json(kind: &str, id: &str, raw: &str) -> StoreResult<Doc> {
    let j: DocJson = serde_json::from_str(raw).map_err(|e| corrupt("document", e))?;
    Ok(Doc {
        kind: kind.to_string(),
        id: id.to_string(),
        version: j.version,
        scope: j.scope.into_owned(),
        status: j.status.into_owned(),
        updated_at: Timestamp::from_millis(
            j.updated_at
                .parse()
                .map_err(|_| StoreError::Corrupt("document time".into()))?,
        ),
        body: serde_json::from_str(&j.body).map_err(|e| corrupt("document body", e))?,
    })
}

fn deployment_from_json(raw: &str) -> StoreResult<Deployment> {
    let j: DeploymentJson = serde_json::from_str(raw).map_err(|e| corrupt("deployment", e))?;
    Ok(Deployment {
        state: DeploymentState::parse(&j.state)
            .ok_or_else(|| StoreError::Corrupt(format!("deployment state {:?}", j.state)))?,
        id: j.id,
        environment: j.environment,
        url: j.url,
        git_sha: j.git_sha,
        created_at: Timestamp::from_millis(j.created_at),
        updated_at: Timestamp::from_millis(j.updated_at),
        meta: j.meta,
    })
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(())
    }

    async fn migrate(&self) -> StoreResult<Migration> {
        // Keys are created on write; the version key records what layout they follow.
        let mut conn = self.conn.clone();
        let key = self.key(&["schema_version"]);
        let current: Option<u32> = conn.get(&key).await.map_err(redis_err)?;
        match current {
            Some(v) if v > SCHEMA_VERSION => Err(StoreError::Corrupt(format!(
                "schema version {v} is newer than this build ({SCHEMA_VERSION})"
            ))),
            Some(v) if v >= SCHEMA_VERSION => Ok(Migration {
                from: v,
                to: SCHEMA_VERSION,
            }),
            _ => {
                // Index the records appended before subjects were indexed
                // (every later append indexes its own record).
                let indexed_key = self.key(&["audit", "indexed_upto"]);
                let head: Option<i64> = conn
                    .hget(self.key(&["audit", "head"]), "seq")
                    .await
                    .map_err(redis_err)?;
                let from: Option<i64> = conn.get(&indexed_key).await.map_err(redis_err)?;
                let mut from = from.unwrap_or(0);
                let head = head.unwrap_or(0);
                while from < head {
                    let batch = self.audit_after(from, 500).await?;
                    if batch.is_empty() {
                        break;
                    }
                    let mut pipe = redis::pipe();
                    for r in &batch {
                        pipe.rpush(self.key(&["audit", "subj", &r.entry.subject]), r.seq)
                            .ignore();
                    }
                    from = batch.last().map_or(head, |r| r.seq);
                    pipe.set(&indexed_key, from).ignore();
                    let _: () = pipe.query_async(&mut conn).await.map_err(redis_err)?;
                }
                if current.is_some_and(|v| v < 3) {
                    // Version 3 lists alert states slim: their by-scope and
                    // by-status indexes are no longer kept, nor read.
                    // One pass over the keyspace (a shared Redis may hold
                    // many other keys): `s:` and `t:` but not `st:`.
                    let prefix = glob_escape(&format!("docs:{ALERT_KIND}:"));
                    self.delete_matching(&format!("{prefix}[st]:*")).await?;
                }
                let _: () = conn.set(&key, SCHEMA_VERSION).await.map_err(redis_err)?;
                Ok(Migration {
                    from: current.unwrap_or(0),
                    to: SCHEMA_VERSION,
                })
            }
        }
    }

    async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let ttl = ttl_millis(ttl);
        let n: i64 = ACQUIRE_SCRIPT
            .key(self.key(&["lease", name]))
            .arg(holder)
            .arg(now.as_millis())
            .arg(now.as_millis().saturating_add(ttl))
            .arg(ttl)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(n == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let n: i64 = RELEASE_SCRIPT
            .key(self.key(&["lease", name]))
            .arg(holder)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(n == 1)
    }

    async fn claim_once(
        &self,
        scope: &str,
        key: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let ttl = ttl_millis(ttl);
        let n: i64 = CLAIM_SCRIPT
            .key(self.key(&["once", scope, key]))
            .arg(now.as_millis())
            .arg(now.as_millis().saturating_add(ttl))
            .arg(ttl)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(n == 1)
    }

    async fn release_claim(&self, scope: &str, key: &str) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let _: () = conn
            .del(self.key(&["once", scope, key]))
            .await
            .map_err(redis_err)?;
        Ok(())
    }

    async fn put_doc(&self, doc: &Doc, expected: Option<i64>) -> StoreResult<DocWrite> {
        self.fold_before(&doc.kind).await?;
        let mut conn = self.conn.clone();
        let v: i64 = PUT_DOC_SCRIPT
            .key(self.key(&["doc", &doc.kind, &doc.id]))
            .arg(expected.map(|v| v.to_string()).unwrap_or_default())
            .arg(doc.body.to_string())
            .arg(self.key(&["docs", &doc.kind, ""]))
            .arg(&doc.id)
            .arg(&doc.scope)
            .arg(&doc.status)
            .arg(doc.updated_at.as_millis().to_string())
            .arg(if slim_listing(&doc.kind) { "1" } else { "" })
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(if v == 0 {
            DocWrite::Conflict
        } else {
            DocWrite::Written(v)
        })
    }

    async fn get_doc(&self, kind: &str, id: &str) -> StoreResult<Option<Doc>> {
        self.fold_before(kind).await?;
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn
            .get(self.key(&["doc", kind, id]))
            .await
            .map_err(redis_err)?;
        raw.map(|r| doc_from_json(kind, id, &r)).transpose()
    }

    async fn list_docs(
        &self,
        kind: &str,
        filter: &DocFilter,
        limit: usize,
    ) -> StoreResult<Vec<Doc>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.fold_before(kind).await?;
        let index = match (&filter.scope, &filter.status) {
            (None, None) => "all".to_string(),
            (Some(s), Some(t)) => format!("st:{s}|{t}"),
            _ if slim_listing(kind) => return self.list_docs_filtered(kind, filter, limit).await,
            (Some(s), None) => format!("s:{s}"),
            (None, Some(t)) => format!("t:{t}"),
        };
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrevrange(self.key(&["docs", kind, &index]), 0, limit as isize - 1)
            .await
            .map_err(redis_err)?;
        self.docs_of(kind, ids).await
    }

    async fn add_rollup(
        &self,
        environment: &str,
        deployment: &str,
        minute: i64,
        values: &[(String, f64)],
    ) -> StoreResult<()> {
        let merged = merge_values(values);
        if merged.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let mut script = ADD_ROLLUP_SCRIPT.prepare_invoke();
        script
            .key(self.key(&["roll", environment, deployment, &minute.to_string()]))
            .key(self.key(&["rollmin", environment, deployment]))
            .arg(minute)
            .arg(ROLLUP_RETENTION_MS);
        for (name, v) in &merged {
            script.arg(name).arg(v.to_string());
        }
        let _: i64 = script.invoke_async(&mut conn).await.map_err(redis_err)?;
        Ok(())
    }

    /// A batch is one atomic script (each delivery's claim, counters and
    /// alert writes, see [`INGEST`]): one round trip for all of it, so the
    /// instance's group commit applies, and no delivery half-recorded.
    fn batches_ingest(&self) -> bool {
        true
    }

    async fn ingest(
        &self,
        batch: &[Ingest],
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<Vec<bool>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let cmd = self.ingest_cmd(batch, now.as_millis(), ttl_millis(ttl));
        let mut conn = self.conn.clone();
        let taken: Vec<i64> = match cmd.query_async(&mut conn).await {
            // Redis does not know the script (restarted, or flushed):
            // loaded, it runs as `Script::invoke_async` would run it.
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                INGEST_SCRIPT
                    .load_async(&mut conn)
                    .await
                    .map_err(redis_err)?;
                cmd.query_async(&mut conn).await
            }
            answer => answer,
        }
        .map_err(redis_err)?;
        Ok(taken.into_iter().map(|t| t == 1).collect())
    }

    /// Claims expire on their own (key TTLs): nothing to prune. The cron
    /// that prunes folds the alert log (see [`Self::fold_alert_log`]).
    async fn prune_claims(&self, _now: Timestamp, _limit: usize) -> StoreResult<u64> {
        self.fold_alert_log().await?;
        Ok(0)
    }

    async fn add_rollups_once(
        &self,
        scope: &str,
        key: &str,
        adds: &[RollupAdd],
        now: Timestamp,
        ttl: Duration,
    ) -> StoreResult<bool> {
        // One transaction (Postgres) or one script (Redis), via ingest.
        super::add_rollups_once_by_ingest(self, scope, key, adds, now, ttl).await
    }

    async fn rollups(
        &self,
        environment: &str,
        deployment: &str,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<RollupRow>> {
        let mut conn = self.conn.clone();
        let minutes: Vec<i64> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.key(&["rollmin", environment, deployment]))
            .arg(from)
            .arg(format!("({to}"))
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        if minutes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for m in &minutes {
            pipe.cmd("HGETALL")
                .arg(self.key(&["roll", environment, deployment, &m.to_string()]));
        }
        let hashes: Vec<Vec<(String, String)>> =
            pipe.query_async(&mut conn).await.map_err(redis_err)?;
        let mut out = Vec::new();
        for (minute, fields) in minutes.into_iter().zip(hashes) {
            let mut fields = fields;
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, v) in fields {
                let value = v
                    .parse::<f64>()
                    .map_err(|e| StoreError::Corrupt(format!("rollup {name}: {e}")))?;
                out.push(RollupRow {
                    minute,
                    name,
                    value,
                });
            }
        }
        Ok(out)
    }

    async fn append_audit(&self, entry: AuditEntry) -> StoreResult<AuditRecord> {
        let mut conn = self.conn.clone();
        let head_key = self.key(&["audit", "head"]);
        let log_key = self.key(&["audit", "log"]);
        let script = &*APPEND_AUDIT_SCRIPT;
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let (seq, hash): (Option<i64>, Option<String>) = redis::cmd("HMGET")
                .arg(&head_key)
                .arg("seq")
                .arg("hash")
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            let seq = seq.unwrap_or(0);
            let hash = hash.unwrap_or_else(|| GENESIS_HASH.to_string());
            let rec = AuditRecord::chain(seq, &hash, entry.clone());
            let json = serde_json::to_string(&AuditJson {
                seq: rec.seq,
                at: rec.entry.at.as_millis(),
                actor: rec.entry.actor.clone(),
                action: rec.entry.action.clone(),
                subject: rec.entry.subject.clone(),
                detail: rec.entry.detail.to_string(),
                prev_hash: rec.prev_hash.clone(),
                hash: rec.hash.clone(),
            })
            .map_err(|e| corrupt("audit record", e))?;
            let ok: i64 = script
                .key(&head_key)
                .key(&log_key)
                .key(self.key(&["audit", "subj", &rec.entry.subject]))
                .arg(seq)
                .arg(&rec.hash)
                .arg(json)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_err)?;
            if ok == 1 {
                return Ok(rec);
            }
            // Another instance appended first; back off a little and rebuild on the new head.
            let jitter = rand::random::<u64>() % (1 + attempt as u64 * 2);
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
        Err(StoreError::Contention(
            "audit append lost the race too many times".into(),
        ))
    }

    async fn audit_after(&self, after: i64, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let start = after.max(0) as isize;
        let stop = start + limit as isize - 1;
        let raw: Vec<String> = conn
            .lrange(self.key(&["audit", "log"]), start, stop)
            .await
            .map_err(redis_err)?;
        raw.iter().map(|r| decode_audit(r)).collect()
    }

    async fn audit_tail(&self, n: usize) -> StoreResult<Vec<AuditRecord>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let raw: Vec<String> = conn
            .lrange(self.key(&["audit", "log"]), -(n as isize), -1)
            .await
            .map_err(redis_err)?;
        raw.iter().map(|r| decode_audit(r)).collect()
    }

    async fn audit_of(&self, subjects: &[String], limit: usize) -> StoreResult<Vec<AuditRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut seqs: Vec<i64> = Vec::new();
        for s in subjects {
            let mine: Vec<i64> = conn
                .lrange(self.key(&["audit", "subj", s]), -(limit as isize), -1)
                .await
                .map_err(redis_err)?;
            seqs.extend(mine);
        }
        seqs.sort_unstable();
        seqs.dedup();
        let keep = seqs.split_off(seqs.len().saturating_sub(limit));
        let mut pipe = redis::pipe();
        for seq in &keep {
            pipe.lindex(self.key(&["audit", "log"]), (seq - 1) as isize);
        }
        let raw: Vec<Option<String>> = pipe.query_async(&mut conn).await.map_err(redis_err)?;
        raw.into_iter()
            .flatten()
            .map(|r| decode_audit(&r))
            .collect()
    }

    async fn upsert_deployment(&self, d: &Deployment) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let json = serde_json::to_string(&DeploymentJson {
            id: d.id.clone(),
            environment: d.environment.clone(),
            url: d.url.clone(),
            state: d.state.as_str().to_string(),
            git_sha: d.git_sha.clone(),
            created_at: d.created_at.as_millis(),
            updated_at: d.updated_at.as_millis(),
            meta: d.meta.clone(),
        })
        .map_err(|e| corrupt("deployment", e))?;
        let _: i64 = UPSERT_DEPLOYMENT_SCRIPT
            .key(self.key(&["deploy", &d.id]))
            .key(self.key(&["deploys", &d.environment]))
            .arg(json)
            .arg(d.created_at.as_millis())
            .arg(&d.id)
            .arg(self.key(&["deploys", ""]))
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(())
    }

    async fn deployment(&self, id: &str) -> StoreResult<Option<Deployment>> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn
            .get(self.key(&["deploy", id]))
            .await
            .map_err(redis_err)?;
        raw.as_deref().map(deployment_from_json).transpose()
    }

    async fn recent_deployments(
        &self,
        environment: &str,
        limit: usize,
    ) -> StoreResult<Vec<Deployment>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrevrange(self.key(&["deploys", environment]), 0, limit as isize - 1)
            .await
            .map_err(redis_err)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.key(&["deploy", id])).collect();
        let raw: Vec<Option<String>> = redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        raw.into_iter()
            .flatten()
            .map(|r| deployment_from_json(&r))
            .collect()
    }

    async fn set_last_known_good(&self, environment: &str, deployment_id: &str) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let exists: bool = conn
            .exists(self.key(&["deploy", deployment_id]))
            .await
            .map_err(redis_err)?;
        if !exists {
            return Err(StoreError::NotFound(format!("deployment {deployment_id}")));
        }
        let _: () = conn
            .set(self.key(&["lkg", environment]), deployment_id)
            .await
            .map_err(redis_err)?;
        Ok(())
    }

    async fn last_known_good(&self, environment: &str) -> StoreResult<Option<Deployment>> {
        let mut conn = self.conn.clone();
        let id: Option<String> = conn
            .get(self.key(&["lkg", environment]))
            .await
            .map_err(redis_err)?;
        match id {
            Some(id) => self.deployment(&id).await,
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_matched_literally_in_scan_patterns() {
        assert_eq!(glob_escape("rg:app"), "rg:app");
        assert_eq!(glob_escape(r"a*b?[c]\"), r"a\*b\?\[c\]\\");
    }
}
