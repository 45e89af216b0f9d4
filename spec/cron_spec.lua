local cron = require "celers.cron"

-- Expected timestamps below were computed independently (Python datetime, UTC).
local NEXT_CASES = {
    { "* * * * *", 1704067200, 1704067260 }, -- 2024-01-01 00:00 -> 2024-01-01 00:01
    { "* * * * *", 1704067259, 1704067260 }, -- 2024-01-01 00:00:59 -> 2024-01-01 00:01
    { "* * * * *", 1704067170, 1704067200 }, -- 2023-12-31 23:59:30 -> 2024-01-01 00:00
    { "*/15 * * * *", 1710065220, 1710065700 }, -- 2024-03-10 10:07 -> 2024-03-10 10:15
    { "*/15 * * * *", 1710067500, 1710068400 }, -- 2024-03-10 10:45 -> 2024-03-10 11:00
    { "10-50/10 * * * *", 1710067800, 1710069000 }, -- 2024-03-10 10:50 -> 2024-03-10 11:10
    { "10-50/10 * * * *", 1710065460, 1710066000 }, -- 2024-03-10 10:11 -> 2024-03-10 10:20
    { "1,2,5 * * * *", 1710064920, 1710065100 }, -- 2024-03-10 10:02 -> 2024-03-10 10:05
    { "0 9-17 * * MON-FRI", 1709917200, 1710147600 }, -- 2024-03-08 17:00 -> 2024-03-11 09:00
    { "30 8 * * *", 1710059400, 1710145800 }, -- 2024-03-10 08:30 -> 2024-03-11 08:30
    { "0 0 29 2 *", 1735689600, 1835395200 }, -- 2025-01-01 00:00 -> 2028-02-29 00:00
    { "0 0 29 2 *", 1704067200, 1709164800 }, -- 2024-01-01 00:00 -> 2024-02-29 00:00
    { "0 0 29 2 *", 3981398400, 4233686400 }, -- 2096-03-01 00:00 -> 2104-02-29 00:00
    { "0 0 31 * *", 1711843200, 1717113600 }, -- 2024-03-31 00:00 -> 2024-05-31 00:00
    { "0 0 31 * *", 1711929600, 1717113600 }, -- 2024-04-01 00:00 -> 2024-05-31 00:00
    { "0 0 31 * *", 1722384000, 1725062400 }, -- 2024-07-31 00:00 -> 2024-08-31 00:00
    { "0 12 1 jan *", 1717200000, 1735732800 }, -- 2024-06-01 00:00 -> 2025-01-01 12:00
    { "0 0 13 * FRI", 1725148800, 1725580800 }, -- 2024-09-01 00:00 -> 2024-09-06 00:00
    { "0 0 13 * 5", 1725580800, 1726185600 }, -- 2024-09-06 00:00 -> 2024-09-13 00:00
    { "0 0 */2 * 1", 1725148800, 1725840000 }, -- 2024-09-01 00:00 -> 2024-09-09 00:00
    { "0 0 * * 7", 1725235200, 1725753600 }, -- 2024-09-02 00:00 -> 2024-09-08 00:00
    { "0 0 * * 0", 1725235200, 1725753600 }, -- 2024-09-02 00:00 -> 2024-09-08 00:00
    { "0 0 * * sun", 1725753600, 1726358400 }, -- 2024-09-08 00:00 -> 2024-09-15 00:00
    { "59 23 31 12 *", 1735689540, 1767225540 }, -- 2024-12-31 23:59 -> 2025-12-31 23:59
    { "@yearly", 1704067200, 1735689600 }, -- 2024-01-01 00:00 -> 2025-01-01 00:00
    { "@annually", 1686830400, 1704067200 }, -- 2023-06-15 12:00 -> 2024-01-01 00:00
    { "@monthly", 1706702400, 1706745600 }, -- 2024-01-31 12:00 -> 2024-02-01 00:00
    { "@weekly", 1725451200, 1725753600 }, -- 2024-09-04 12:00 -> 2024-09-08 00:00
    { "@daily", 1709078400, 1709164800 }, -- 2024-02-28 00:00 -> 2024-02-29 00:00
    { "@midnight", 1709164800, 1709251200 }, -- 2024-02-29 00:00 -> 2024-03-01 00:00
    { "@hourly", 1709247600, 1709251200 }, -- 2024-02-29 23:00 -> 2024-03-01 00:00
    { "0 0 1 3 *", 4107456000, 4107542400 }, -- 2100-02-28 00:00 -> 2100-03-01 00:00
    { "0 0 29 2 *", 4070908800, 4233686400 }, -- 2099-01-01 00:00 -> 2104-02-29 00:00
    { "5 4 * * *", -43200, 14700 }, -- 1969-12-31 12:00 -> 1970-01-01 04:05
    { "0 0 1 1 *", -304819200, -283996800 }, -- 1960-05-05 00:00 -> 1961-01-01 00:00
    { "0 22 * * 1-5", 1725660000, 1725919200 }, -- 2024-09-06 22:00 -> 2024-09-09 22:00
    { "23 0-20/2 * * *", 1725654180, 1725668580 }, -- 2024-09-06 20:23 -> 2024-09-07 00:23
    { "15 14 1 * *", 1725580800, 1727792100 }, -- 2024-09-06 00:00 -> 2024-10-01 14:15
    { "0 0 1,15 * 3", 1725148800, 1725408000 }, -- 2024-09-01 00:00 -> 2024-09-04 00:00
}

local function parse(expr)
  local s, err = cron.parse(expr)
  assert(s, err)
  return s
end

describe("celers.cron", function()
  describe("UTC helpers", function()
    it("convert known dates", function()
      assert.equals(0, cron.days_from_civil(1970, 1, 1))
      assert.equals(19782, cron.days_from_civil(2024, 2, 29)) -- 1709164800 / 86400
      assert.equals(1709164800, cron.from_utc(2024, 2, 29))
      assert.equals(951782400, cron.from_utc(2000, 2, 29))
      assert.equals(-1, cron.days_from_civil(1969, 12, 31))
      assert.same({ 2024, 2, 29 }, { cron.civil_from_days(19782) })
      assert.same({ 1969, 12, 31 }, { cron.civil_from_days(-1) })
      assert.same({ 2100, 3, 1 }, { cron.civil_from_days(cron.days_from_civil(2100, 2, 28) + 1) })
    end)

    it("round-trip every day over four centuries", function()
      local start = cron.days_from_civil(1800, 1, 1)
      local y, m, d = 1800, 1, 1
      local mdays = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
      for z = start, start + 146097 do
        local cy, cm, cd = cron.civil_from_days(z)
        if cy ~= y or cm ~= m or cd ~= d then
          error(("day %d: got %d-%d-%d, want %d-%d-%d"):format(z, cy, cm, cd, y, m, d))
        end
        assert(cron.days_from_civil(y, m, d) == z)
        local leap = (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
        local len = (m == 2 and leap) and 29 or mdays[m]
        d = d + 1
        if d > len then d, m = 1, m + 1 end
        if m > 12 then m, y = 1, y + 1 end
      end
    end)

    it("to_utc agrees with os.date('!*t') (which ignores the local zone)", function()
      math.randomseed(1)
      for _ = 1, 2000 do
        local t = math.random(0, 4102444800) -- 1970 .. 2100
        local u, o = cron.to_utc(t), os.date("!*t", t)
        assert.same({ o.year, o.month, o.day, o.hour, o.min, o.sec, o.wday - 1 },
                    { u.year, u.month, u.day, u.hour, u.min, u.sec, u.wday })
      end
    end)

    it("to_utc handles negative times", function()
      local u = cron.to_utc(-1)
      assert.same({ 1969, 12, 31, 23, 59, 59, 3 }, { u.year, u.month, u.day, u.hour, u.min, u.sec, u.wday })
    end)
  end)

  describe("parse", function()
    it("accepts every syntax form", function()
      local s = parse("*/15 0-6/3 1,15,31 JAN-mar,Dec mon-FRI")
      assert.same({ [0] = true, [15] = true, [30] = true, [45] = true }, s.minutes)
      assert.same({ [0] = true, [3] = true, [6] = true }, s.hours)
      assert.same({ [1] = true, [15] = true, [31] = true }, s.doms)
      assert.same({ [1] = true, [2] = true, [3] = true, [12] = true }, s.months)
      assert.same({ [1] = true, [2] = true, [3] = true, [4] = true, [5] = true }, s.dows)
      assert.is_false(s.dom_star)
      assert.is_false(s.dow_star)
    end)

    it("treats 7 as Sunday and a/s as a through the maximum", function()
      assert.is_true(parse("0 0 * * 7").dows[0])
      assert.is_true(parse("0 0 * * 5-7").dows[0])
      assert.same({ [50] = true, [55] = true }, parse("50/5 * * * *").minutes)
    end)

    it("tolerates surrounding and repeated whitespace and macro case", function()
      assert.equals(parse("0 0 1 1 *").doms[1], parse("  @YEARLY ").doms[1])
      assert.truthy(cron.parse("\t0  0 * *\t*  "))
    end)

    it("marks '*'-prefixed day fields as unrestricted", function()
      local s = parse("0 0 */2 * 1")
      assert.is_true(s.dom_star)
      assert.is_false(s.dow_star)
    end)

    it("rejects bad expressions naming the field", function()
      local cases = {
        { "60 * * * *", "bad minute field '60'" },
        { "* 24 * * *", "bad hour field '24'" },
        { "* * 0 * *", "bad day%-of%-month field '0'" },
        { "* * 32 * *", "bad day%-of%-month field '32'" },
        { "* * * 13 *", "bad month field '13'" },
        { "* * * foo *", "bad month field 'foo'" },
        { "* * * * 8", "bad day%-of%-week field '8'" },
        { "* * * * MONDAY", "bad day%-of%-week field 'MONDAY'" },
        { "* * * JAN-FEB-MAR *", "bad month field" },
        { "*/0 * * * *", "bad minute field '%*/0': bad step" },
        { "*/x * * * *", "bad minute field" },
        { "5-1 * * * *", "bad minute field '5%-1'" },
        { "1,,2 * * * *", "bad minute field" },
        { "-1 * * * *", "bad minute field" },
        { "1.5 * * * *", "bad minute field" },
        { "? * * * *", "bad minute field" },
        { "* * * *", "expected 5 fields" },
        { "* * * * * *", "expected 5 fields" },
        { "", "expected 5 fields" },
        { "@reboot", "unknown macro '@reboot'" },
      }
      for _, c in ipairs(cases) do
        local s, err = cron.parse(c[1])
        assert.is_nil(s, c[1])
        assert.matches("^cron: " .. c[2], err)
      end
      assert.has_error(function() cron.parse(5) end, "cron.parse: 'expr' must be a string")
    end)
  end)

  describe("next", function()
    it("matches the independently computed table", function()
      for _, c in ipairs(NEXT_CASES) do
        local got = parse(c[1]):next(c[2])
        if got ~= c[3] then
          error(("%s after %d: got %s, want %d"):format(c[1], c[2], tostring(got), c[3]))
        end
      end
    end)

    it("is strictly after, even on a matching minute or with fractions", function()
      local s = parse("* * * * *")
      assert.equals(1709164860, s:next(1709164800))
      assert.equals(1709164860, s:next(1709164800.5))
      assert.equals(1709164800, s:next(1709164799.999))
    end)

    it("returns integers", function()
      local v = parse("@hourly"):next(1709164800.25)
      assert.equals(v, math.floor(v))
      if math.type then assert.equals("integer", math.type(v)) end
    end)

    it("walks Feb 29 only in leap years", function()
      local s = parse("0 0 29 2 *")
      local t, got = 0, {}
      for _ = 1, 4 do
        t = s:next(t)
        got[#got + 1] = cron.to_utc(t).year
      end
      assert.same({ 1972, 1976, 1980, 1984 }, got)
      t = s:next(cron.from_utc(2096, 3, 1))
      assert.equals(cron.from_utc(2104, 2, 29), t) -- 2100 is not a leap year
    end)

    it("skips 30-day months for day 31", function()
      local s = parse("0 0 31 * *")
      local t, months = cron.from_utc(2024, 1, 1), {}
      for _ = 1, 7 do
        t = s:next(t)
        months[#months + 1] = cron.to_utc(t).month
      end
      assert.same({ 1, 3, 5, 7, 8, 10, 12 }, months)
    end)

    it("terminates with nil, 'never' for impossible dates", function()
      for _, e in ipairs { "0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *" } do
        local t, err = parse(e):next(1704067200)
        assert.is_nil(t, e)
        assert.equals("never", err)
      end
    end)

    it("uses OR when both day fields are restricted, AND otherwise", function()
      -- 2024-09: the 1st is a Sunday
      local either = parse("0 0 1 * 1")    -- 1st of month or Mondays
      assert.equals(cron.from_utc(2024, 9, 2), either:next(cron.from_utc(2024, 9, 1)))
      assert.equals(cron.from_utc(2024, 10, 1), either:next(cron.from_utc(2024, 9, 30)))
      local dom_only = parse("0 0 1 * *")
      assert.equals(cron.from_utc(2024, 10, 1), dom_only:next(cron.from_utc(2024, 9, 1)))
      local dow_only = parse("0 0 * * 1")
      assert.equals(cron.from_utc(2024, 9, 2), dow_only:next(cron.from_utc(2024, 9, 1)))
    end)

    it("rolls over hours, days, months and years", function()
      local s = parse("0,30 */6 * * *")
      local t, got = cron.from_utc(2024, 12, 31, 17, 0), {}
      for _ = 1, 5 do
        t = s:next(t)
        local u = cron.to_utc(t)
        got[#got + 1] = ("%d-%02d-%02d %02d:%02d"):format(u.year, u.month, u.day, u.hour, u.min)
      end
      assert.same({ "2024-12-31 18:00", "2024-12-31 18:30", "2025-01-01 00:00",
                    "2025-01-01 00:30", "2025-01-01 06:00" }, got)
    end)

    it("agrees with a minute-by-minute scan", function()
      local exprs = { "*/7 */5 * * *", "13 2 */3 * *", "0 12 * 2 1,3", "45 23 1-7 * FRI",
                      "0 0 10-20/5 * SAT", "5 5 5 5 *", "0 */4 * * 6,0" }
      math.randomseed(3)
      for _, e in ipairs(exprs) do
        local s = parse(e)
        for _ = 1, 5 do
          local after = math.random(1700000000, 1800000000)
          local want = math.floor(after / 60) * 60 + 60
          while not s:matches(want) do want = want + 60 end
          assert.equals(want, s:next(after), e)
        end
      end
    end)

    it("validates its argument", function()
      assert.has_error(function() parse("* * * * *"):next("now") end, "schedule:next: 'after' must be a number")
      assert.has_error(function() parse("* * * * *"):next(0 / 0) end, "schedule:next: 'after' must be a number")
    end)
  end)

  describe("matches", function()
    it("checks the minute containing the time", function()
      local s = parse("30 8 * * MON")
      local mon = cron.from_utc(2024, 9, 2, 8, 30)
      assert.is_true(s:matches(mon))
      assert.is_true(s:matches(mon + 59))
      assert.is_false(s:matches(mon + 60))
      assert.is_false(s:matches(mon + 86400))
      assert.is_true(parse("0 0 29 2 *"):matches(1709164800))
      assert.has_error(function() s:matches("x") end, "schedule:matches: 't' must be a number")
    end)

    it("has a tostring", function()
      assert.equals("cron(@daily)", tostring(parse("@daily")))
    end)
  end)

  describe("interval", function()
    it("gives the next multiple strictly after", function()
      local i = cron.interval(300)
      assert.equals(300, i:next(0))
      assert.equals(600, i:next(300))
      assert.equals(600, i:next(301))
      assert.equals(1709165100, i:next(1709164800))
      assert.equals(0, i:next(-1))
      assert.is_true(i:matches(900))
      assert.is_false(i:matches(901))
    end)

    it("supports fractions and an anchor", function()
      assert.equals(1.5, cron.interval(0.5):next(1.2))
      local i = cron.interval(3600, 1800)
      assert.equals(1800, i:next(0))
      assert.equals(5400, i:next(1800))
      assert.equals("interval(3600s)", tostring(i))
    end)

    it("validates arguments", function()
      for _, bad in ipairs { 0, -5, "60", 0 / 0, math.huge } do
        assert.has_error(function() cron.interval(bad) end, "cron.interval: 'seconds' must be a positive number")
      end
      assert.has_error(function() cron.interval(5, "x") end, "cron.interval: 'anchor' must be a number")
      assert.has_error(function() cron.interval(5):next() end, "interval:next: 'after' must be a number")
    end)
  end)
end)
