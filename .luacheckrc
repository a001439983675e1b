std = "lua54"
max_line_length = 80

-- What the host's sandbox offers policies and job scripts; reading anything
-- else (io, os, require) or setting any global is a warning.
stds.sandbox = {
  read_globals = {
    "string", "table", "math", "utf8",
    "pairs", "ipairs", "next", "select", "type", "tostring", "tonumber",
    "error", "assert", "pcall",
    "setmetatable", "getmetatable", "rawget", "rawset", "rawequal", "rawlen",
  },
}

files["policies"] = { std = "sandbox" }
files["scripts"] = { std = "sandbox" }
files["spec"] = { std = "+busted" }
