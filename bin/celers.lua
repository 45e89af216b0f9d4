-- The command-line tool as LuaRocks installs it: LuaRocks wraps this file in the tree's
-- bin/celers. The wrapper runs this file from <tree>/lib/luarocks/rocks-X.Y/..., and only
-- knows the trees of LuaRocks' own configuration, so the tree is found from this file's path
-- here: `celers` then runs from any tree (luarocks --tree DIR) without `luarocks path`.
-- From a checkout, bin/celers (a shell script) does the same job.
local tree = arg and arg[0] and arg[0]:match("^(.*)/lib/luarocks/rocks[^/]*/")
if tree then
  local v = _VERSION:match("%d+%.%d+")
  package.path = ("%s/share/lua/%s/?.lua;%s/share/lua/%s/?/init.lua;%s"):format(tree, v, tree, v, package.path)
  package.cpath = ("%s/lib/lua/%s/?.so;%s"):format(tree, v, package.cpath)
end
os.exit(require("celers.cli").main(arg), true)
