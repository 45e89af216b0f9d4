-- The other broker on the same database: celers-broker-sql 0.2, the Rust broker of CeleRS, as
-- its SQL reaches the server. Used by spec/interop_rust_spec.lua.
--
-- Its schema and statements are restated here from the crate's public source (tables, columns,
-- types, collations, statements and the order it issues them in) and run through the mariadb
-- client, in a session set up the way its driver (sqlx 0.8) sets one up. The one change is the
-- clause order MariaDB needs: LIMIT before FOR UPDATE SKIP LOCKED. Where the crate reads a row
-- and then binds its values into the next statement, the values travel in user variables of
-- the same session (SELECT ... INTO @v), so a claim is still one transaction.
-- luacheck: max line length 130
local helper = require "spec.helper"

local rust = {}

-- sqlx's connection set-up for MySQL/MariaDB
local SESSION = "SET sql_mode = (SELECT CONCAT(@@sql_mode, ',PIPES_AS_CONCAT,NO_ENGINE_SUBSTITUTION')), "
   .. "time_zone = '+00:00', NAMES utf8mb4;\n"

local function run(dsn, sql)
   return helper.query(dsn, SESSION .. sql)
end
rust.run = run

local q = helper.sql_string

local function hex(s)
   return (s:gsub(".", function(c) return ("%02X"):format(c:byte()) end))
end

local function unhex(h)
   return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

-- Uuid::new_v4(), as text
function rust.uuid4()
   local b = {}
   for i = 1, 16 do b[i] = math.random(0, 255) end
   b[7] = (b[7] % 16) + 0x40
   b[9] = (b[9] % 64) + 0x80
   local h = {}
   for i = 1, 16 do h[i] = ("%02x"):format(b[i]) end
   local s = table.concat(h)
   return s:sub(1, 8) .. "-" .. s:sub(9, 12) .. "-" .. s:sub(13, 16) .. "-" .. s:sub(17, 20) .. "-" .. s:sub(21)
end

------------------------------------------------------------------------------------------------
-- schema: its migrations 000-003 and 006-008, recorded as it records them

local MIGRATIONS_TABLE = [[
CREATE TABLE IF NOT EXISTS celers_migrations (
  id         INT AUTO_INCREMENT PRIMARY KEY,
  version    VARCHAR(20) NOT NULL UNIQUE,
  name       VARCHAR(255) NOT NULL,
  applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE INDEX IF NOT EXISTS idx_migrations_version ON celers_migrations (version);
]]

local MIGRATIONS = {
   { "001", "initial_schema", [[
CREATE TABLE IF NOT EXISTS celers_tasks (
  id            CHAR(36) PRIMARY KEY,
  task_name     VARCHAR(255) NOT NULL,
  payload       MEDIUMBLOB NOT NULL,
  state         VARCHAR(20) NOT NULL DEFAULT 'pending',
  priority      INT NOT NULL DEFAULT 0,
  retry_count   INT NOT NULL DEFAULT 0,
  max_retries   INT NOT NULL DEFAULT 3,
  created_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  scheduled_at  TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  started_at    TIMESTAMP NULL,
  completed_at  TIMESTAMP NULL,
  worker_id     VARCHAR(255),
  error_message TEXT,
  metadata      JSON,
  CONSTRAINT chk_state CHECK (state IN ('pending', 'processing', 'completed', 'failed', 'cancelled'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE IF NOT EXISTS celers_dead_letter_queue (
  id            CHAR(36) PRIMARY KEY,
  task_id       CHAR(36) NOT NULL,
  task_name     VARCHAR(255) NOT NULL,
  payload       MEDIUMBLOB NOT NULL,
  retry_count   INT NOT NULL,
  error_message TEXT,
  failed_at     TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  metadata      JSON
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE IF NOT EXISTS celers_task_history (
  id          BIGINT AUTO_INCREMENT PRIMARY KEY,
  task_id     CHAR(36) NOT NULL,
  state       VARCHAR(20) NOT NULL,
  `timestamp` TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  worker_id   VARCHAR(255),
  message     TEXT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE INDEX idx_tasks_state_priority ON celers_tasks (state, priority DESC, created_at ASC);
CREATE INDEX idx_tasks_scheduled ON celers_tasks (scheduled_at, state);
CREATE INDEX idx_tasks_worker ON celers_tasks (worker_id, state);
CREATE INDEX idx_dlq_failed_at ON celers_dead_letter_queue (failed_at DESC);
CREATE INDEX idx_history_task_id ON celers_task_history (task_id, `timestamp` DESC);
DELIMITER //
CREATE PROCEDURE move_to_dlq(IN task_uuid CHAR(36))
BEGIN
  INSERT INTO celers_dead_letter_queue (id, task_id, task_name, payload, retry_count, error_message, metadata)
  SELECT UUID(), id, task_name, payload, retry_count, error_message, metadata FROM celers_tasks WHERE id = task_uuid;
  DELETE FROM celers_tasks WHERE id = task_uuid;
END//
DELIMITER ;
]] },
   { "002", "results_table", [[
CREATE TABLE IF NOT EXISTS celers_results (
  id            CHAR(36) PRIMARY KEY,
  task_id       CHAR(36) NOT NULL,
  task_name     VARCHAR(255) NOT NULL,
  result        MEDIUMBLOB,
  error_message TEXT,
  state         VARCHAR(20) NOT NULL DEFAULT 'pending',
  created_at    TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  completed_at  TIMESTAMP NULL,
  expires_at    TIMESTAMP NULL,
  CONSTRAINT chk_result_state CHECK (state IN ('pending', 'success', 'failure'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE INDEX idx_results_task_id ON celers_results (task_id);
CREATE INDEX idx_results_expires_at ON celers_results (expires_at);
CREATE INDEX idx_results_state ON celers_results (state);
]] },
   { "003", "performance_indexes", [[
CREATE INDEX IF NOT EXISTS idx_tasks_dequeue ON celers_tasks (state, priority DESC, scheduled_at ASC, created_at ASC);
CREATE INDEX IF NOT EXISTS idx_tasks_stale ON celers_tasks (state, started_at);
CREATE INDEX IF NOT EXISTS idx_tasks_name ON celers_tasks (task_name);
CREATE INDEX IF NOT EXISTS idx_tasks_created_range ON celers_tasks (created_at);
CREATE INDEX IF NOT EXISTS idx_tasks_completed ON celers_tasks (completed_at);
]] },
   -- 006-008 create tables of its own only (we never read them); restated in short
   { "006", "idempotency_keys", [[
CREATE TABLE IF NOT EXISTS celers_idempotency_keys (
  idempotency_key VARCHAR(255) PRIMARY KEY,
  task_id         CHAR(36) NOT NULL,
  created_at      TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  expires_at      TIMESTAMP NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE INDEX idx_idempotency_expires ON celers_idempotency_keys (expires_at);
]] },
   { "007", "workflow_dag", [[
CREATE TABLE IF NOT EXISTS celers_workflows (
  id         CHAR(36) PRIMARY KEY,
  name       VARCHAR(255) NOT NULL,
  state      VARCHAR(20) NOT NULL DEFAULT 'pending',
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  metadata   JSON
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
]] },
   { "008", "production_features", [[
CREATE TABLE IF NOT EXISTS celers_rate_limits (
  id          CHAR(36) PRIMARY KEY,
  key_name    VARCHAR(255) NOT NULL,
  bucket_name VARCHAR(255) NOT NULL,
  tokens      INT NOT NULL DEFAULT 0,
  max_tokens  INT NOT NULL,
  refill_rate DOUBLE NOT NULL,
  last_refill TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  UNIQUE KEY uk_rate_limit (key_name, bucket_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE INDEX idx_rate_limits_key ON celers_rate_limits (key_name);
]] },
}

--- Its migrate(): the tracking table, then each migration whose version is not recorded yet,
-- recorded after it ran. Returns the versions it applied.
function rust.migrate(dsn)
   run(dsn, MIGRATIONS_TABLE)
   local done = {}
   for _, r in ipairs(run(dsn, "SELECT version FROM celers_migrations")) do done[r[1]] = true end
   local applied = {}
   for _, m in ipairs(MIGRATIONS) do
      if not done[m[1]] then
         run(dsn, m[3] .. ("INSERT INTO celers_migrations (version, name) VALUES (%s, %s);"):format(q(m[1]), q(m[2])))
         applied[#applied + 1] = m[1]
      end
   end
   return applied
end

------------------------------------------------------------------------------------------------
-- its statements

--- The metadata its enqueue writes: queue and enqueue time, then the serialized TaskMetadata.
-- `extra` is JSON text spliced in as more members (serde writes integers in full).
function rust.metadata(queue, id, name, max_retries, priority, timeout_secs, extra)
   local now = os.date("!%Y-%m-%dT%H:%M:%S+00:00")
   return ('{"queue":"%s","enqueued_at":"%s","id":"%s","name":"%s","state":"Pending","created_at":"%s",'
      .. '"updated_at":"%s","max_retries":%d,"timeout_secs":%s,"priority":%d%s}'):format(
      queue, now, id, name, now, now, max_retries, timeout_secs and ("%d"):format(timeout_secs) or "null",
      priority, extra and ("," .. extra) or "")
end

--- enqueue(): returns the task id. t: name, payload (bytes), queue, priority, max_retries,
-- timeout_secs, metadata_extra (JSON members), delay (enqueue_after).
function rust.enqueue(dsn, t)
   local id = t.id or rust.uuid4()
   local prio, mr = t.priority or 0, t.max_retries or 3
   local meta = rust.metadata(t.queue or "default", id, t.name, mr, prio, t.timeout_secs, t.metadata_extra)
   local at = t.delay and ("DATE_ADD(NOW(), INTERVAL %d SECOND)"):format(t.delay) or "NOW()"
   run(dsn, ("INSERT INTO celers_tasks (id, task_name, payload, state, priority, max_retries, metadata, created_at, "
      .. "scheduled_at) VALUES (%s, %s, X'%s', 'pending', %d, %d, %s, NOW(), %s)"):format(
      q(id), q(t.name), hex(t.payload or ""), prio, mr, q(meta), at))
   return id
end

rust.CLAIM_SELECT = "SELECT id, task_name, payload, retry_count FROM celers_tasks WHERE state = 'pending' "
   .. "AND scheduled_at <= NOW() ORDER BY priority DESC, created_at ASC LIMIT 1 FOR UPDATE SKIP LOCKED"

--- dequeue() (or dequeue_with_worker_id(worker_id)): the claimed {id, name, payload,
-- retry_count} (retry_count as read, before the claim's +1), or nil. With wait, polls every
-- 0.1 s for up to that many seconds, like its worker loop.
function rust.claim(dsn, worker_id, wait)
   local deadline = os.time() + (wait or 0)
   while true do
      local set_worker = worker_id and (", worker_id = " .. q(worker_id)) or ""
      local r = run(dsn, "SET @id = NULL, @name = NULL, @payload = NULL, @rc = NULL;\nSTART TRANSACTION;\n"
         .. rust.CLAIM_SELECT:gsub("^SELECT id, task_name, payload, retry_count ",
            "SELECT id, task_name, payload, retry_count INTO @id, @name, @payload, @rc ") .. ";\n"
         .. "UPDATE celers_tasks SET state = 'processing', started_at = NOW(), retry_count = retry_count + 1"
         .. set_worker .. " WHERE id = @id;\nCOMMIT;\nSELECT @id, @name, HEX(@payload), @rc;")[1]
      if r[1] ~= "NULL" then
         return { id = r[1], name = r[2], payload = unhex(r[3]), retry_count = tonumber(r[4]) }
      end
      if os.time() >= deadline then return nil end
      os.execute("sleep 0.1")
   end
end

function rust.ack(dsn, id)
   run(dsn, "UPDATE celers_tasks SET state = 'completed', completed_at = NOW() WHERE id = " .. q(id))
end

--- reject(id, requeue): with requeue, back to pending with backoff 2^retry_count s, or CALL
-- move_to_dlq once retry_count >= max_retries; without, state failed. Returns what it did.
function rust.reject(dsn, id, requeue)
   if not requeue then
      run(dsn, "UPDATE celers_tasks SET state = 'failed', completed_at = NOW() WHERE id = " .. q(id))
      return "failed"
   end
   local r = run(dsn, "SELECT retry_count, max_retries FROM celers_tasks WHERE id = " .. q(id))[1]
   local retry_count, max_retries = tonumber(r[1]), tonumber(r[2])
   if retry_count >= max_retries then
      run(dsn, "CALL move_to_dlq(" .. q(id) .. ")")
      return "dead_letter"
   end
   run(dsn, ("UPDATE celers_tasks SET state = 'pending', scheduled_at = DATE_ADD(NOW(), INTERVAL %d SECOND), "
      .. "started_at = NULL, worker_id = NULL WHERE id = %s"):format(math.min(2 ^ retry_count, 3600), q(id)))
   return "retry"
end

--- requeue_from_dlq(dlq_id): a new task (new v4 id, priority 0, max_retries 3) with the entry's
-- task_name, payload and metadata; the entry deleted. Returns the new id.
function rust.requeue_from_dlq(dsn, dlq_id)
   local id = rust.uuid4()
   run(dsn, "START TRANSACTION;\nSELECT task_id, task_name, payload, metadata INTO @tid, @name, @payload, @meta "
      .. "FROM celers_dead_letter_queue WHERE id = " .. q(dlq_id) .. ";\n"
      .. "INSERT INTO celers_tasks (id, task_name, payload, state, priority, retry_count, max_retries, metadata, "
      .. "created_at, scheduled_at) VALUES (" .. q(id) .. ", @name, @payload, 'pending', 0, 0, 3, @meta, NOW(), NOW());\n"
      .. "DELETE FROM celers_dead_letter_queue WHERE id = " .. q(dlq_id) .. ";\nCOMMIT;")
   return id
end

rust.STATISTICS = "SELECT SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END) AS pending, "
   .. "SUM(CASE WHEN state = 'processing' THEN 1 ELSE 0 END) AS processing, "
   .. "SUM(CASE WHEN state = 'completed' THEN 1 ELSE 0 END) AS completed, "
   .. "SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) AS failed, "
   .. "SUM(CASE WHEN state = 'cancelled' THEN 1 ELSE 0 END) AS cancelled, COUNT(*) AS total FROM celers_tasks"

--- get_statistics(): counts by state, total, and the dead-letter count
function rust.statistics(dsn)
   local r = run(dsn, rust.STATISTICS .. ";\nSELECT COUNT(*) FROM celers_dead_letter_queue;")
   local s, n = r[1], function(v) return tonumber(v) or 0 end
   return { pending = n(s[1]), processing = n(s[2]), completed = n(s[3]), failed = n(s[4]),
            cancelled = n(s[5]), total = n(s[6]), dlq = n(r[2][1]) }
end

rust.LIST_DLQ = "SELECT id, task_id, task_name, retry_count, error_message, failed_at FROM celers_dead_letter_queue "
   .. "ORDER BY failed_at DESC LIMIT 100 OFFSET 0"

function rust.list_dlq(dsn)
   local out = {}
   for _, r in ipairs(run(dsn, rust.LIST_DLQ)) do
      out[#out + 1] = { id = r[1], task_id = r[2], task_name = r[3], retry_count = tonumber(r[4]),
                        error_message = r[5], failed_at = r[6] }
   end
   return out
end

rust.GET_TASK = "SELECT id, task_name, state, priority, retry_count, max_retries, created_at, scheduled_at, "
   .. "started_at, completed_at, worker_id, error_message FROM celers_tasks WHERE id = ?"

function rust.get_task(dsn, id)
   local r = run(dsn, (rust.GET_TASK:gsub("%?", q(id))))[1]
   if not r then return nil end
   return { id = r[1], task_name = r[2], state = r[3], priority = tonumber(r[4]), retry_count = tonumber(r[5]),
            max_retries = tonumber(r[6]), created_at = r[7], scheduled_at = r[8], started_at = r[9],
            completed_at = r[10], worker_id = r[11], error_message = r[12] }
end

--- A result upsert in its style (INSERT ... ON DUPLICATE KEY UPDATE) into the shared
-- celers_results; one row per task only where task_id is a unique key.
function rust.store_result(dsn, task_id, name, result, state)
   run(dsn, ("INSERT INTO celers_results (id, task_id, task_name, result, state, created_at, completed_at) "
      .. "VALUES (%s, %s, %s, %s, %s, NOW(), NOW()) ON DUPLICATE KEY UPDATE result = VALUES(result), "
      .. "state = VALUES(state), completed_at = VALUES(completed_at)"):format(
      q(rust.uuid4()), q(task_id), q(name), q(result), q(state)))
end

rust.GET_RESULT = "SELECT task_id, task_name, state, result, error_message, created_at, completed_at "
   .. "FROM celers_results WHERE task_id = ?"

--- A history row in its style: task_id, state, timestamp, worker_id, message.
function rust.record_history(dsn, task_id, state, worker_id, message)
   run(dsn, ("INSERT INTO celers_task_history (task_id, state, `timestamp`, worker_id, message) "
      .. "VALUES (%s, %s, NOW(), %s, %s)"):format(q(task_id), q(state), q(worker_id), q(message)))
end

------------------------------------------------------------------------------------------------
-- what its driver sees

--- The column definitions the server sends for a statement's result set, as a real client
-- receives them: { [column] = { type =, collation =, flags = { NAME = true, ... } } }.
function rust.columns(dsn, sql)
   local out = helper.client(dsn, SESSION .. sql .. ";\n", { "--table", "--column-type-info" })
   local cols, cur = {}, nil
   for line in out:gmatch("[^\n]+") do
      local name = line:match("^Field%s+%d+:%s+`(.*)`$")
      if name then
         cur = { flags = {} }
         cols[name] = cur
      elseif cur then
         local k, v = line:match("^(%w+):%s*(.-)%s*$")
         if k == "Type" then cur.type = v
         elseif k == "Collation" then cur.collation = v
         elseif k == "Flags" then
            for f in v:gmatch("%S+") do cur.flags[f] = true end
         end
      end
   end
   return cols
end

return rust
