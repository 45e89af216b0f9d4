--- celers.cron: 5-field cron expressions and fixed intervals, evaluated in UTC.
--
-- Date math is done here (days <-> civil date, after Howard Hinnant's
-- algorithms) so results never depend on the process's local time zone.
--
-- Day matching follows Vixie cron: if either day field starts with '*' (so
-- '*/2' counts as unrestricted) the day must match both fields; if both are
-- restricted, a day matches when EITHER does.

local cron = {}

local floor = math.floor

-- -------------------------------------------------------------- UTC helpers

--- Days since 1970-01-01 of a proleptic Gregorian date.
function cron.days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400                              -- [0, 399]
  local mp = (m + 9) % 12                                -- March = 0
  local doy = floor((153 * mp + 2) / 5) + d - 1          -- [0, 365]
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

--- Inverse of days_from_civil: year, month, day.
function cron.civil_from_days(z)
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097                           -- [0, 146096]
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local d = doy - floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

--- Unix seconds -> table {year, month, day, hour, min, sec, wday (0 = Sunday)}.
function cron.to_utc(t)
  t = floor(t)
  local days = floor(t / 86400)
  local secs = t - days * 86400
  local y, m, d = cron.civil_from_days(days)
  return {
    year = y, month = m, day = d,
    hour = floor(secs / 3600), min = floor(secs % 3600 / 60), sec = secs % 60,
    wday = (days + 4) % 7, -- 1970-01-01 was a Thursday
  }
end

--- (year, month, day, hour, min, sec) in UTC -> Unix seconds.
function cron.from_utc(y, m, d, h, mi, s)
  return cron.days_from_civil(y, m, d) * 86400 + (h or 0) * 3600 + (mi or 0) * 60 + (s or 0)
end

---------------------------------------------------------------- parsing

local FIELDS = {
  { name = "minute", min = 0, max = 59 },
  { name = "hour", min = 0, max = 23 },
  { name = "day-of-month", min = 1, max = 31 },
  { name = "month", min = 1, max = 12, names = {
      jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6,
      jul = 7, aug = 8, sep = 9, oct = 10, nov = 11, dec = 12 } },
  { name = "day-of-week", min = 0, max = 7, names = {
      sun = 0, mon = 1, tue = 2, wed = 3, thu = 4, fri = 5, sat = 6 } },
}

local MACROS = {
  ["@yearly"] = "0 0 1 1 *", ["@annually"] = "0 0 1 1 *", ["@monthly"] = "0 0 1 * *",
  ["@weekly"] = "0 0 * * 0", ["@daily"] = "0 0 * * *", ["@midnight"] = "0 0 * * *",
  ["@hourly"] = "0 * * * *",
}

-- A number or (for month/day-of-week) a three-letter name; nil on failure.
local function value(f, s)
  if s:match("^%d+$") then return tonumber(s) end
  return f.names and f.names[s:lower()]
end

-- Parse one field into a set {[v] = true}. Returns set or nil, reason.
local function parse_field(f, text)
  local set = {}
  for item in (text .. ","):gmatch("([^,]*),") do
    local range, step = item:match("^([^/]*)/(.*)$")
    if not range then range = item end
    local lo, hi
    if range == "*" then
      lo, hi = f.min, f.max
    else
      local a, b = range:match("^([^-]+)-([^-]+)$")
      lo = value(f, a or range)
      hi = b and value(f, b) or lo
      if not lo or not hi then return nil, ("bad value '%s'"):format(item) end
      if lo < f.min or hi > f.max or lo > hi then
        return nil, ("'%s' is out of range %d-%d"):format(item, f.min, f.max)
      end
      if step and not b then hi = f.max end -- 'a/s' means a through the maximum
    end
    local st = 1
    if step then
      st = step:match("^%d+$") and tonumber(step)
      if not st or st < 1 then return nil, ("bad step in '%s'"):format(item) end
    end
    for v = lo, hi, st do set[v] = true end
  end
  return set
end

local Schedule = {}
Schedule.__index = Schedule

--- Parse an expression. Returns a schedule, or nil and an error naming the field.
function cron.parse(expr)
  if type(expr) ~= "string" then error("cron.parse: 'expr' must be a string", 2) end
  local text = expr:match("^%s*(.-)%s*$")
  if text:sub(1, 1) == "@" then
    local m = MACROS[text:lower()]
    if not m then return nil, ("cron: unknown macro '%s'"):format(text) end
    text = m
  end
  local parts = {}
  for p in text:gmatch("%S+") do parts[#parts + 1] = p end
  if #parts ~= 5 then
    return nil, ("cron: expected 5 fields (minute hour day-of-month month day-of-week), got %d"):format(#parts)
  end
  local sets = {}
  for i, f in ipairs(FIELDS) do
    local set, why = parse_field(f, parts[i])
    if not set then return nil, ("cron: bad %s field '%s': %s"):format(f.name, parts[i], why) end
    sets[i] = set
  end
  if sets[5][7] then sets[5][0] = true end -- 7 is Sunday too
  return setmetatable({
    expr = expr,
    minutes = sets[1], hours = sets[2], doms = sets[3], months = sets[4], dows = sets[5],
    dom_star = parts[3]:sub(1, 1) == "*",
    dow_star = parts[5]:sub(1, 1) == "*",
  }, Schedule)
end

---------------------------------------------------------------- evaluation

function Schedule:day_matches(days, d)
  local dom, dow = self.doms[d] == true, self.dows[(days + 4) % 7] == true
  if self.dom_star or self.dow_star then return dom and dow end
  return dom or dow
end

--- Does the minute containing Unix time t match? (seconds are ignored)
function Schedule:matches(t)
  if type(t) ~= "number" then error("schedule:matches: 't' must be a number", 2) end
  local u = cron.to_utc(t)
  local days = floor(floor(t) / 86400)
  return self.minutes[u.min] == true and self.hours[u.hour] == true
    and self.months[u.month] == true and self:day_matches(days, u.day)
end

-- Longest possible gap is Feb 29 across a skipped century leap year (8 years);
-- search a little beyond that, then give up.
local HORIZON_DAYS = 366 * 9

local function first_at_or_after(set, from, max)
  for v = from, max do
    if set[v] then return v end
  end
end

--- First matching minute strictly after Unix time `after`, or nil, "never".
function Schedule:next(after)
  if type(after) ~= "number" or after ~= after then
    error("schedule:next: 'after' must be a number", 2)
  end
  local t = floor(after / 60) * 60 + 60
  local days = floor(t / 86400)
  local secs = t - days * 86400
  local h, mi = floor(secs / 3600), floor(secs % 3600 / 60)
  local limit = days + HORIZON_DAYS
  while days <= limit do
    local y, m, d = cron.civil_from_days(days)
    if not self.months[m] then
      -- jump to the first day of the next month
      if m == 12 then y, m = y + 1, 1 else m = m + 1 end
      days, h, mi = cron.days_from_civil(y, m, 1), 0, 0
    elseif not self:day_matches(days, d) then
      days, h, mi = days + 1, 0, 0
    else
      local hh = first_at_or_after(self.hours, h, 23)
      if hh and hh > h then mi = 0 end
      local mm = hh and first_at_or_after(self.minutes, mi, 59)
      if mm then return days * 86400 + hh * 3600 + mm * 60 end
      if hh and hh < 23 then
        h, mi = hh + 1, 0 -- no minute left in this hour: try the next one
      else
        days, h, mi = days + 1, 0, 0
      end
    end
  end
  return nil, "never"
end

Schedule.__tostring = function(s) return "cron(" .. s.expr .. ")" end

---------------------------------------------------------------- intervals

local Interval = {}
Interval.__index = Interval

--- Every `seconds`, aligned to multiples since `anchor` (default: the epoch).
function cron.interval(seconds, anchor)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds <= 0 or seconds == math.huge then
    error("cron.interval: 'seconds' must be a positive number", 2)
  end
  if anchor ~= nil and (type(anchor) ~= "number" or anchor ~= anchor) then
    error("cron.interval: 'anchor' must be a number", 2)
  end
  return setmetatable({ seconds = seconds, anchor = anchor or 0 }, Interval)
end

--- First multiple of the interval (counted from the anchor) strictly after `after`.
function Interval:next(after)
  if type(after) ~= "number" or after ~= after then
    error("interval:next: 'after' must be a number", 2)
  end
  local n = floor((after - self.anchor) / self.seconds) + 1
  return self.anchor + n * self.seconds
end

--- Is t exactly on the interval grid?
function Interval:matches(t)
  local n = (t - self.anchor) / self.seconds
  return n == floor(n)
end

Interval.__tostring = function(i) return ("interval(%gs)"):format(i.seconds) end

return cron
