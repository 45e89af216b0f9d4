-- An LDoc filter (ldoc --filter ldoc_names.print, with scripts/ on LUA_PATH): prints one line
-- "module<TAB>item<TAB>summary" per documented item, for spec/docs_spec.lua.
local M = {}

function M.print(docs)
  for _, mod in ipairs(docs) do
    io.write(mod.name, "\t", "", "\t", (mod.summary or ""):gsub("%s+", " "), "\n")
    for _, item in ipairs(mod.items or {}) do
      io.write(mod.name, "\t", item.name, "\t", (item.summary or ""):gsub("%s+", " "), "\n")
    end
  end
end

return M
