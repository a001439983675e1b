-- Default job: counts turns, characters and words of one conversation and
-- upserts the result into conversation_stats, one row per conversation_id.
--
-- A redelivered or republished message updates the same row (deliveries
-- counts how often), so running a message twice is harmless.
--
-- Word rule. A word is a maximal run of code points that are neither
-- whitespace nor punctuation: ASCII controls, space and punctuation, C1
-- controls and Latin-1 punctuation U+0080-U+00BF (soft hyphen U+00AD
-- excepted, it sits inside words), U+2000-U+206F general punctuation,
-- U+2E00-U+2E7F supplemental punctuation, box drawing U+2500-U+257F,
-- U+3000-U+303F CJK symbols, the vertical, small form and fullwidth
-- punctuation of U+FE10-U+FF65, the danda U+0964-U+0965, Arabic U+060C,
-- U+061B, U+061F, U+06D4, Armenian U+0589, Hebrew U+05BE, U+05C0, U+05C3,
-- and the byte order mark U+FEFF. Adjustments:
--   - ZWNJ and ZWJ (U+200C, U+200D) belong to the word: Persian writes them
--     inside words and emoji sequences are glued with ZWJ.
--   - An apostrophe (U+0027 or U+2019) between two word code points belongs
--     to the word, so "don't" and "un'emozione" are one word each.
--   - Each Han (U+3400-U+4DBF, U+4E00-U+9FFF, U+F900-U+FAFF, U+3005-U+3007,
--     U+20000-U+2FFFF), Hiragana (U+3040-U+309F) and Katakana (U+30A0-U+30FF
--     but the middle dot U+30FB, U+31F0-U+31FF, U+FF66-U+FF9F) code point is
--     a word on its own, since those scripts are written without spaces.
-- Everything else (letters of any script, digits, combining marks, emoji)
-- is part of a word. Hangul is written with spaces and needs nothing more.
-- TODO: no dictionary segmentation for Thai, Lao, Khmer and Burmese, so each
-- run between spaces counts as one word and top_words holds whole phrases.
--
-- Top words are folded with string.lower, which in the C locale the host
-- keeps folds A-Z only: "Der" and "der" merge, "Ärger" and "ärger" do not.

local byte, find, format, gmatch, gsub, lower, sub =
  string.byte, string.find, string.format, string.gmatch, string.gsub,
  string.lower, string.sub
local concat, sort = table.concat, table.sort
local codes, ulen = utf8.codes, utf8.len
local math_type = math.type

-- How many words top_words keeps; enough to see what a conversation is about.
local TOP_WORDS = 10

-- Ids in the corpus are under 40 bytes; PostgreSQL's btree refuses a key
-- over about 2700 bytes, which would fail the upsert on every redelivery.
local MAX_ID_BYTES = 512

local WORD, SEPARATOR, SINGLE, JOINER = 0, 1, 2, 3

-- Non-ASCII code point ranges that are not WORD, sorted and disjoint so a
-- binary search finds them: { first, last, class }.
local RANGES = {
  { 0x0080, 0x00AC, SEPARATOR },
  { 0x00AE, 0x00BF, SEPARATOR },
  { 0x0589, 0x0589, SEPARATOR },
  { 0x05BE, 0x05BE, SEPARATOR },
  { 0x05C0, 0x05C0, SEPARATOR },
  { 0x05C3, 0x05C3, SEPARATOR },
  { 0x060C, 0x060C, SEPARATOR },
  { 0x061B, 0x061B, SEPARATOR },
  { 0x061F, 0x061F, SEPARATOR },
  { 0x06D4, 0x06D4, SEPARATOR },
  { 0x0964, 0x0965, SEPARATOR },
  { 0x2000, 0x200B, SEPARATOR },
  { 0x200E, 0x2018, SEPARATOR },
  { 0x2019, 0x2019, JOINER },
  { 0x201A, 0x206F, SEPARATOR },
  { 0x2500, 0x257F, SEPARATOR },
  { 0x2E00, 0x2E7F, SEPARATOR },
  { 0x3000, 0x3004, SEPARATOR },
  { 0x3005, 0x3007, SINGLE },
  { 0x3008, 0x303F, SEPARATOR },
  { 0x3040, 0x309F, SINGLE },
  { 0x30A0, 0x30FA, SINGLE },
  { 0x30FB, 0x30FB, SEPARATOR },
  { 0x30FC, 0x30FF, SINGLE },
  { 0x31F0, 0x31FF, SINGLE },
  { 0x3400, 0x4DBF, SINGLE },
  { 0x4E00, 0x9FFF, SINGLE },
  { 0xF900, 0xFAFF, SINGLE },
  { 0xFE10, 0xFE1F, SEPARATOR },
  { 0xFE30, 0xFE6F, SEPARATOR },
  { 0xFEFF, 0xFEFF, SEPARATOR },
  { 0xFF01, 0xFF0F, SEPARATOR },
  { 0xFF1A, 0xFF20, SEPARATOR },
  { 0xFF3B, 0xFF40, SEPARATOR },
  { 0xFF5B, 0xFF65, SEPARATOR },
  { 0xFF66, 0xFF9F, SINGLE },
  { 0x20000, 0x2FFFF, SINGLE },
}

local UPSERT_SQL = [[
INSERT INTO conversation_stats
  (conversation_id, message_id, language, topic, turns, turns_by_role,
   chars, words, top_words)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9::jsonb)
ON CONFLICT (conversation_id) DO UPDATE SET
  message_id = EXCLUDED.message_id,
  language = EXCLUDED.language,
  topic = EXCLUDED.topic,
  turns = EXCLUDED.turns,
  turns_by_role = EXCLUDED.turns_by_role,
  chars = EXCLUDED.chars,
  words = EXCLUDED.words,
  top_words = EXCLUDED.top_words,
  deliveries = conversation_stats.deliveries + 1,
  updated_at = now()]]

local CREATE_SQL = [[
CREATE TABLE IF NOT EXISTS conversation_stats (
  conversation_id text PRIMARY KEY,
  message_id text,
  language text,
  topic text,
  turns integer NOT NULL,
  turns_by_role jsonb NOT NULL,
  chars integer NOT NULL,
  words integer NOT NULL,
  top_words jsonb NOT NULL,
  deliveries integer NOT NULL DEFAULT 1,
  updated_at timestamptz NOT NULL DEFAULT now()
)]]


-- Flat arrays keep the per-code-point lookup free of nested indexing.
local RANGE_FIRST, RANGE_LAST, RANGE_CLASS = {}, {}, {}
for i, range in ipairs(RANGES) do
  assert(range[1] <= range[2], "word rule range out of order")
  assert(i == 1 or RANGES[i - 1][2] < range[1], "word rule ranges overlap")
  RANGE_FIRST[i], RANGE_LAST[i], RANGE_CLASS[i] = range[1], range[2], range[3]
end
local RANGE_COUNT = #RANGES

-- Explicit byte ranges rather than %w: character classes follow the locale.
local ASCII_CLASS = {}
for cp = 0, 127 do
  local is_alnum = (cp >= 0x30 and cp <= 0x39) or (cp >= 0x41 and cp <= 0x5A)
    or (cp >= 0x61 and cp <= 0x7A)
  ASCII_CLASS[cp] = is_alnum and WORD or SEPARATOR
end
ASCII_CLASS[0x27] = JOINER


-- Takes a code point cp of 128 or more; returns its class.
local function class_of(cp)
  local lo, hi = 1, RANGE_COUNT
  while lo <= hi do
    local mid = (lo + hi) // 2
    if cp < RANGE_FIRST[mid] then
      hi = mid - 1
    elseif cp > RANGE_LAST[mid] then
      lo = mid + 1
    else
      return RANGE_CLASS[mid]
    end
  end
  return WORD
end


-- Walks the valid UTF-8 string text once and calls visit(word, acc) for
-- each word, in order; returns how many words there were. Only words are
-- cut out as strings: a word is kept as byte offsets until it ends.
local function for_each_word(text, visit, acc)
  local count = 0
  local start, joiner

  for pos, cp in codes(text) do
    local class = cp < 128 and ASCII_CLASS[cp] or class_of(cp)
    if class == WORD then
      start = start or pos
      joiner = nil
    elseif class == JOINER and start and not joiner then
      joiner = pos
    else
      if start then
        visit(sub(text, start, (joiner or pos) - 1), acc)
        count = count + 1
        start, joiner = nil, nil
      end
      if class == SINGLE then
        -- SINGLE code points start at U+3005: three bytes, four past U+FFFF.
        visit(sub(text, pos, pos + (cp < 0x10000 and 2 or 3)), acc)
        count = count + 1
      end
    end
  end

  if start then
    visit(sub(text, start, (joiner or #text + 1) - 1), acc)
    count = count + 1
  end
  return count
end


-- Every ASCII byte but letters, digits and the apostrophe is a separator,
-- so a run of the other bytes holds whole words and the separators around
-- it end them. A run of plain letters and digits is one word as it stands;
-- only a run with an apostrophe or a non-ASCII byte needs the walk above,
-- which costs a call per code point. Same words, same order. Explicit
-- ranges, not %w: that follows the locale, and each byte it tests costs
-- a tolower() and an isalnum() (17 us per KiB of prose here, against 11
-- for [a-z0-9]+); a-z comes first because it matches most bytes.
local RUN = "[a-zA-Z0-9'\128-\255]+"
local PLAIN_RUN = "[a-zA-Z0-9]+"
local PLAIN = "^[a-zA-Z0-9]+$"
-- Text folded with string.lower has no A-Z left (the host keeps the C
-- locale), so its words are runs of two ranges.
local FOLDED_RUN = "[a-z0-9]+"


-- Takes valid UTF-8 text of chars code points; true when it is ASCII with
-- no apostrophe, so that every run of letters and digits is a word. Both
-- tests run at C speed: chars equals the length only for ASCII.
local function is_plain(text, chars)
  return chars == #text and not find(text, "'", 1, true)
end


-- Calls visit(word, acc) for each word of text (valid UTF-8 of chars code
-- points), in order; returns how many words there were.
local function each_word(text, chars, visit, acc)
  local count = 0
  if is_plain(text, chars) then
    for run in gmatch(text, PLAIN_RUN) do
      visit(run, acc)
      count = count + 1
    end
    return count
  end
  for run in gmatch(text, RUN) do
    if find(run, PLAIN) then
      visit(run, acc)
      count = count + 1
    else
      count = count + for_each_word(run, visit, acc)
    end
  end
  return count
end


local function append(word, list)
  list[#list + 1] = word
end


local function ignore()
end


-- Takes a word of text already folded with string.lower, which changes
-- only A-Z and so no word boundary: folding the text once is one call
-- where folding each word was one per word.
local function tally(word, counts)
  counts[word] = (counts[word] or 0) + 1
end


-- Adds the words of folded text (valid UTF-8 of chars code points) to
-- counts; returns how many there were. The plain case, most prose, counts
-- in the loop itself: a call per word was a tenth of the default job.
local function tally_words(text, chars, counts)
  if not is_plain(text, chars) then
    return each_word(text, chars, tally, counts)
  end
  local count = 0
  for word in gmatch(text, FOLDED_RUN) do
    counts[word] = (counts[word] or 0) + 1
    count = count + 1
  end
  return count
end


-- Takes a string text; returns the list of its words as written, or nil and
-- a reason when text is not valid UTF-8.
local function tokenize(text)
  local chars, bad = ulen(text)
  if not chars then
    return nil, format("not valid UTF-8 (byte %d)", bad)
  end

  local words = {}
  each_word(text, chars, append, words)
  return words
end


-- Takes a string text; returns its number of words, or nil and a reason
-- when text is not valid UTF-8.
local function count_words(text)
  local chars, bad = ulen(text)
  if not chars then
    return nil, format("not valid UTF-8 (byte %d)", bad)
  end

  return each_word(text, chars, ignore)
end


-- Byte order, unlike "<" on strings, which goes through strcoll and so
-- through whatever LC_COLLATE the host process runs with.
local function bytes_before(a, b)
  local n = #a < #b and #a or #b
  for i = 1, n do
    local x, y = byte(a, i), byte(b, i)
    if x ~= y then
      return x < y
    end
  end
  return #a < #b
end


local function ranks_before(word, count, other)
  local other_count = other[2]
  if count ~= other_count then
    return count > other_count
  end
  return bytes_before(word, other[1])
end


-- Takes counts (word -> count) and an optional limit n (default TOP_WORDS);
-- returns a new list of { word, count } pairs, most frequent first, ties in
-- byte order of the word. Pairs are made only for words that enter the list.
local function top_words(counts, n)
  n = n or TOP_WORDS
  local top = {}
  if n < 1 then
    return top
  end

  for word, count in pairs(counts) do
    local size = #top
    if size < n or ranks_before(word, count, top[size]) then
      local i = size < n and size + 1 or size
      while i > 1 and ranks_before(word, count, top[i - 1]) do
        top[i] = top[i - 1]
        i = i - 1
      end
      top[i] = { word, count }
    end
  end
  return top
end


-- True when t holds exactly the keys 1..#t, as lua-cjson builds an array.
local function is_sequence(t)
  local n, keys = #t, 0
  for key in next, t do
    if math_type(key) ~= "integer" or key < 1 or key > n then
      return false
    end
    keys = keys + 1
  end
  return keys == n
end


-- Names the JSON type a decoded value came from, for refusal reasons.
-- lua-cjson decodes both [] and {} to an empty table.
local function json_type(value)
  local t = type(value)
  if t == "userdata" then
    return "null"
  elseif t ~= "table" then
    return t
  elseif next(value) == nil then
    return "empty array or object"
  end
  return is_sequence(value) and "array" or "object"
end


-- Checks the string value before PostgreSQL sees it: a text or jsonb value
-- with invalid UTF-8 or a NUL fails the statement on every redelivery.
-- Returns nil when value is fine, else what is wrong with it.
local function text_problem(value)
  local chars, bad = ulen(value)
  if not chars then
    return format("is not valid UTF-8 (byte %d)", bad)
  elseif find(value, "\0", 1, true) then
    return "contains a NUL character"
  end
  return nil
end


-- Takes the decoded body; returns the conversation id, or nil and a reason.
local function check_id(body)
  local id = body.conversation_id
  if id == nil then
    return nil, "conversation_id is missing"
  elseif type(id) ~= "string" then
    return nil, "conversation_id must be a string, got " .. json_type(id)
  elseif id == "" then
    return nil, "conversation_id is empty"
  elseif #id > MAX_ID_BYTES then
    return nil, format("conversation_id is %d bytes, over %d", #id,
      MAX_ID_BYTES)
  end

  local problem = text_problem(id)
  if problem then
    return nil, "conversation_id " .. problem
  end
  return id
end


-- Takes the decoded body; returns the log, or nil and a reason. An empty
-- log is accepted: a conversation with no turns yet is not malformed, and
-- lua-cjson cannot tell [] from {} anyway.
local function check_log(body)
  local log = body.conversation_log
  if log == nil then
    return nil, "conversation_log is missing"
  elseif type(log) ~= "table" or not is_sequence(log) then
    return nil, "conversation_log must be an array, got " .. json_type(log)
  end
  return log
end


-- Takes turn number i and the field name and value; returns nil when value
-- is a string fit to count, else a reason naming the turn. The content is
-- checked for UTF-8 where it is counted, so it is measured only once.
local function check_turn_field(i, name, value)
  local problem
  if value == nil then
    problem = "is missing"
  elseif type(value) ~= "string" then
    problem = "must be a string, got " .. json_type(value)
  elseif name == "role" and value == "" then
    problem = "is empty"
  elseif name == "role" then
    problem = text_problem(value)
  end

  if problem then
    return format("conversation_log turn %d: %s %s", i, name, problem)
  end
  return nil
end


-- Takes turn number i and the turn; returns nil when it can be counted,
-- else the reason it cannot.
local function check_turn(i, turn)
  if type(turn) ~= "table" then
    return format("conversation_log turn %d must be an object, got %s", i,
      json_type(turn))
  end
  return check_turn_field(i, "role", turn.role)
    or check_turn_field(i, "content", turn.content)
end


-- A pass-through field is kept only when PostgreSQL will take it as text.
local function optional_text(value)
  if type(value) == "string" and not text_problem(value) then
    return value
  end
  return nil
end


-- Takes the decoded body (a table); returns a new stats table:
--   { conversation_id, language, topic (string or nil), turns,
--     turns_by_role = { role = count }, chars, words,
--     top_words = { { word, count }, ... } }
-- or nil and a reason naming the field when the content is refused.
local function analyze(body)
  local id, id_reason = check_id(body)
  if not id then
    return nil, id_reason
  end

  local log, log_reason = check_log(body)
  if not log then
    return nil, log_reason
  end

  local by_role, counts = {}, {}
  local chars, words = 0, 0
  for i = 1, #log do
    local turn = log[i]
    local reason = check_turn(i, turn)
    if reason then
      return nil, reason
    end

    local content, role = turn.content, turn.role
    local length, bad = ulen(content)
    if not length then
      return nil, format("conversation_log turn %d: content is not valid "
        .. "UTF-8 (byte %d)", i, bad)
    end

    by_role[role] = (by_role[role] or 0) + 1
    chars = chars + length
    words = words + tally_words(lower(content), length, counts)
  end

  return {
    conversation_id = id,
    language = optional_text(body.language),
    topic = optional_text(body.topic),
    turns = #log,
    turns_by_role = by_role,
    chars = chars,
    words = words,
    top_words = top_words(counts),
  }
end


-- JSON text for the two shapes the upsert stores, written here rather
-- than by host.json_encode: lua-cjson printed each count through
-- printf("%.14g") and set up an encoder per call, a tenth of the job. The
-- strings are valid UTF-8 (checked above), so only '"', '\\' and control
-- characters need escaping.
local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\" }
for code = 0, 31 do
  ESCAPES[string.char(code)] = format("\\u%04x", code)
end
ESCAPES[string.char(127)] = "\\u007f"

-- Explicit bytes, as for words: %c would follow the locale.
local NEEDS_ESCAPE = '[\0-\31"\\\127]'

local function json_string(s)
  if find(s, NEEDS_ESCAPE) then
    s = gsub(s, NEEDS_ESCAPE, ESCAPES)
  end
  return '"' .. s .. '"'
end


-- Takes counts (string -> integer); returns a JSON object with its keys
-- in byte order, so the same conversation gives the same text.
local function encode_object(counts)
  local keys = {}
  for key in pairs(counts) do
    keys[#keys + 1] = key
  end
  sort(keys, bytes_before)

  local members = {}
  for i, key in ipairs(keys) do
    members[i] = json_string(key) .. ":" .. counts[key]
  end
  return "{" .. concat(members, ",") .. "}"
end


-- Takes the { word, count } list; returns a JSON array of pairs. A word
-- is cut from a run of letters, digits, apostrophes and non-ASCII bytes
-- (RUN above), so it never holds a byte JSON must escape.
local function encode_pairs(list)
  local items = {}
  for i, pair in ipairs(list) do
    items[i] = '["' .. pair[1] .. '",' .. pair[2] .. "]"
  end
  return "[" .. concat(items, ",") .. "]"
end


-- Takes the host; creates conversation_stats when it does not exist yet.
-- A database error propagates and stops start-up.
local function init(host)
  host.db.query(CREATE_SQL)
end


-- Takes msg { body, properties } and the host; returns true once the row is
-- stored, or false and a reason when the content is refused. A database
-- error propagates as a job error.
local function handle(msg, host)
  local body = msg.body
  if type(body) ~= "table" then
    return false, "body must be a JSON object, got " .. json_type(body)
  end

  local stats, reason = analyze(body)
  if not stats then
    return false, reason
  end

  local properties = msg.properties or {}
  -- exec, not query: the rows are not needed, so inside a batch the host
  -- sends the upsert and runs the next message while the server works.
  -- It reports the row count only when it waited for it.
  local affected = host.db.exec(UPSERT_SQL,
    stats.conversation_id, optional_text(properties.message_id),
    stats.language, stats.topic, stats.turns,
    encode_object(stats.turns_by_role),
    stats.chars, stats.words,
    encode_pairs(stats.top_words))
  if affected ~= nil and affected ~= 1 then
    error(format("failed to upsert conversation_stats: %s rows affected",
      tostring(affected)))
  end

  host.log("debug", "conversation_stats_stored", {
    conversation_id = stats.conversation_id,
    turns = stats.turns,
    chars = stats.chars,
    words = stats.words,
  })
  return true
end


return {
  init = init,
  handle = handle,
  -- The job runs one upsert and never opens or ends a transaction, so
  -- the host may put several messages in one transaction, each in a
  -- savepoint, and commit them together before acking any.
  batchable = true,
  analyze = analyze,
  tokenize = tokenize,
  count_words = count_words,
  top_words = top_words,
  json_string = json_string,
  UPSERT_SQL = UPSERT_SQL,
  CREATE_SQL = CREATE_SQL,
}
