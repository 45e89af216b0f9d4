-- A strict reader of the Prometheus text exposition format, for the metrics specs: HELP and
-- TYPE at most once per metric and HELP before TYPE, every sample after its metric's TYPE,
-- only counters and gauges, label values unescaped (backslash, quote, newline).
local prometheus = {}

local ESCAPES = { n = "\n", ["\\"] = "\\", ['"'] = '"' }

-- name="value",... -> { name = value }
local function parse_labels(body, line)
  local labels, pos = {}, 1
  while pos <= #body do
    local l, start = body:match('^([a-zA-Z_][a-zA-Z0-9_]*)="()', pos)
    assert(l, "bad labels: " .. line)
    local buf, i = {}, start
    while body:sub(i, i) ~= '"' do
      local ch = body:sub(i, i)
      assert(ch ~= "" and ch ~= "\n", "unterminated value: " .. line)
      if ch == "\\" then
        buf[#buf + 1] = assert(ESCAPES[body:sub(i + 1, i + 1)], "bad escape: " .. line)
        i = i + 2
      else
        buf[#buf + 1], i = ch, i + 1
      end
    end
    labels[l] = table.concat(buf)
    pos = i + 1
    if body:sub(pos, pos) == "," then pos = pos + 1 end
  end
  return labels
end

--- { help = {name=text}, type = {name=kind}, lines = {...},
--    samples = { {name=, labels=, value=<text>, number=<tonumber(value)>, line=} ... } }
function prometheus.parse(text)
  assert(text:sub(-1) == "\n", "exposition text must end with a newline")
  local r = { help = {}, type = {}, samples = {}, lines = {} }
  for line in text:gmatch("([^\n]*)\n") do
    r.lines[#r.lines + 1] = line
    local hn, ht = line:match("^# HELP (%S+) (.*)$")
    local tn, tt = line:match("^# TYPE (%S+) (%S+)$")
    if hn then
      assert(r.help[hn] == nil, "second HELP for " .. hn)
      assert(r.type[hn] == nil, "HELP after TYPE for " .. hn)
      r.help[hn] = ht
    elseif tn then
      assert(r.type[tn] == nil, "second TYPE for " .. tn)
      assert(tt == "counter" or tt == "gauge", "bad TYPE: " .. line)
      r.type[tn] = tt
    else
      local name, rest = line:match("^([a-zA-Z_:][a-zA-Z0-9_:]*)(.*)$")
      assert(name, "bad line: " .. line)
      assert(r.type[name], "sample before TYPE: " .. line)
      local labels = {}
      local body, value = rest:match("^{(.*)} (%S+)$")
      if body then labels = parse_labels(body, line) else value = rest:match("^ (%S+)$") end
      assert(value, "bad sample: " .. line)
      r.samples[#r.samples + 1] = {
        name = name, labels = labels, value = value, number = tonumber(value), line = line,
      }
    end
  end
  return r
end

return prometheus
