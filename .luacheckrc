-- luacheck configuration for the repository
std = "max"
exclude_files = { "build/**", ".db/**" }

files["spec/**/*.lua"] = { std = "+busted" }
files["spec/helper.lua"] = { std = "max" }
