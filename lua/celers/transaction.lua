--- celers.transaction: broker:transaction(fn), the application's statements and the
-- broker's enqueues committing or rolling back together.
--
-- fn receives a tx object with execute (the application's statements, bound parameters
-- only) and the enqueue methods; everything runs on the broker's connection.

local transaction = {}

local unpack = table.unpack or unpack -- luacheck: globals unpack

local TX = {}
TX.__index = TX

local forwarded = { "enqueue", "enqueue_at", "enqueue_after", "enqueue_batch", "queue" }
for _, name in ipairs(forwarded) do
  TX[name] = function(self, ...)
    local handle = self._handle
    return handle[name](handle, ...)
  end
end

--- The application's statement inside the transaction: rows as tables keyed by column name
-- (integers as integers), or affected rows and the insert id for a statement without rows.
-- (broker:execute, outside a transaction, is the plain escape hatch of celers.celery.)
function TX:execute(...)
  local handle = self._handle
  return handle:_tx_execute(...)
end

function TX:__tostring()
  return "celers.transaction(queue=" .. self._handle:queue() .. ")"
end

local function pack(...)
  return { n = select("#", ...), ... }
end

--- Run fn(tx, ...) in a transaction. Commits when fn returns normally and returns fn's
-- values (true when it returned none). Rolls back when fn raises (the error is raised again)
-- or returns nil and an error (returned as nil, err). A failed COMMIT, or a transaction the
-- server already ended (deadlock, lost connection), returns nil, err. Nothing is repeated.
local function run(broker, fn, ...)
  if type(fn) ~= "function" then
    error(("celers: transaction: 'fn' must be a function (got %s)"):format(type(fn)), 2)
  end
  local handle, begin_err = broker:_tx_begin()
  if not handle then return nil, begin_err end
  local tx = setmetatable({ _handle = handle }, TX)
  local out = pack(pcall(fn, tx, ...))
  if not out[1] then
    handle:_tx_end(false)
    error(out[2], 0)
  end
  if out[2] == nil and out[3] ~= nil then
    handle:_tx_end(false)
    return nil, out[3]
  end
  local ok, err = handle:_tx_end(true)
  if not ok then return nil, err end
  if out.n < 2 or (out[2] == nil and out.n <= 2) then return true end
  return unpack(out, 2, out.n)
end

--- Add `transaction` to the broker methods table (done by require "celers").
-- @tparam table methods the broker methods table
function transaction.install(methods)
  methods.transaction = run
end

return transaction
