local helpers = require "helpers"
local job = require "analyze_conversation"

local ABSENT, null, turn = helpers.ABSENT, helpers.null, helpers.turn

-- The stats of helpers.body(): "Hello, how are you?" from the user and
-- "I am fine. How are you?" from the assistant.
local DEFAULT_STATS = {
  conversation_id = "english-greetings-0001",
  language = "english",
  topic = "greetings",
  turns = 2,
  turns_by_role = { user = 1, assistant = 1 },
  chars = 42,
  words = 10,
  top_words = {
    { "are", 2 }, { "how", 2 }, { "you", 2 },
    { "am", 1 }, { "fine", 1 }, { "hello", 1 }, { "i", 1 },
  },
}


describe("analyze_conversation", function()
  describe("tokenize", function()
    local rows = {
      { "splits an English sentence at spaces and punctuation",
        "Hello, world! How are you?",
        { "Hello", "world", "How", "are", "you" } },
      { "keeps an apostrophe between two letters",
        "Don't panic, it's fine.", { "Don't", "panic", "it's", "fine" } },
      { "keeps a typographic apostrophe between two letters",
        "Plato’s cave", { "Plato’s", "cave" } },
      { "drops apostrophes that open, close or repeat",
        "'quoted' rock'n'roll it''s", { "quoted", "rock'n'roll", "it", "s" } },
      { "splits at a hyphen, an underscore and a decimal point",
        "well-known snake_case 3.14", { "well", "known", "snake", "case",
          "3", "14" } },
      { "counts each Han character as a word", "你好，世界",
        { "你", "好", "世", "界" } },
      { "counts each kana and kanji as a word", "日本語とカナ、ひらがな。",
        { "日", "本", "語", "と", "カ", "ナ", "ひ", "ら", "が", "な" } },
      { "treats the katakana middle dot as punctuation", "パン・ミルク",
        { "パ", "ン", "ミ", "ル", "ク" } },
      { "counts a Han character glued to Latin letters on its own",
        "abc中def", { "abc", "中", "def" } },
      { "keeps Bengali words whole with their vowel signs",
        "নমস্কার বন্ধু।", { "নমস্কার", "বন্ধু" } },
      { "splits Hindi at the danda", "नमस्ते।दोस्त", { "नमस्ते", "दोस्त" } },
      { "splits Arabic at spaces and the Arabic question mark",
        "مرحبا بالعالم؟كيف", { "مرحبا", "بالعالم", "كيف" } },
      { "splits Russian at spaces and punctuation", "Привет, мир!",
        { "Привет", "мир" } },
      { "keeps a Persian word with a zero-width non-joiner whole",
        "می‌خواهم بروم", { "می‌خواهم", "بروم" } },
      { "keeps Hangul words whole", "안녕하세요, 세계!",
        { "안녕하세요", "세계" } },
      { "counts an emoji as a word", "I ❤️ you 😀",
        { "I", "❤️", "you", "😀" } },
      { "keeps an emoji sequence joined by ZWJ whole", "👨‍👩‍👧 family",
        { "👨‍👩‍👧", "family" } },
      { "splits at a no-break space and fullwidth punctuation",
        "a\u{A0}b！c（d）", { "a", "b", "c", "d" } },
      { "splits at a zero-width space and a byte order mark",
        "a\u{200B}b\u{FEFF}c", { "a", "b", "c" } },
      { "splits at control characters and NUL", "a\0b\tc\r\nd",
        { "a", "b", "c", "d" } },
      { "counts a Thai run without spaces as one word (known shortcoming)",
        "สวัสดีครับ ลาก่อน", { "สวัสดีครับ", "ลาก่อน" } },
      { "returns no words for empty content", "", {} },
      { "returns no words for punctuation and spaces only",
        " ... !!! 。 ¿? ", {} },
    }
    for _, row in ipairs(rows) do
      local name, text, expected = table.unpack(row)
      it(name, function()
        assert.same(expected, job.tokenize(text))
      end)
    end

    it("refuses invalid UTF-8 and names the byte", function()
      local words, reason = job.tokenize("ab\255cd")
      assert.is_nil(words)
      assert.equal("not valid UTF-8 (byte 3)", reason)
    end)
  end)


  describe("count_words", function()
    local rows = {
      { "counts 4 words in 你好，世界", "你好，世界", 4 },
      { "counts 5 words in a Japanese mix of kanji and kana",
        "東京へ行く", 5 },
      { "counts 0 words in empty content", "", 0 },
      { "counts 1 word for a lone emoji", "😀", 1 },
    }
    for _, row in ipairs(rows) do
      local name, text, expected = table.unpack(row)
      it(name, function()
        assert.equal(expected, job.count_words(text))
      end)
    end

    it("refuses a UTF-16 surrogate encoded in UTF-8", function()
      local count, reason = job.count_words("a\237\160\128")
      assert.is_nil(count)
      assert.equal("not valid UTF-8 (byte 2)", reason)
    end)
  end)


  describe("top_words", function()
    local twelve = {}
    for i = 1, 12 do
      twelve[string.format("w%02d", i)] = i
    end
    local twelve_ties = {}
    for i = 12, 1, -1 do
      twelve_ties[string.format("w%02d", i)] = 1
    end

    local rows = {
      { "orders by count, most frequent first", { a = 1, b = 3, c = 2 },
        { { "b", 3 }, { "c", 2 }, { "a", 1 } } },
      { "breaks ties by byte order, capitals first",
        { beta = 2, alpha = 2, Alpha = 2 },
        { { "Alpha", 2 }, { "alpha", 2 }, { "beta", 2 } } },
      { "orders multibyte words by their bytes",
        { ["世"] = 1, ["é"] = 1, z = 1, ["É"] = 1 },
        { { "z", 1 }, { "É", 1 }, { "é", 1 }, { "世", 1 } } },
      { "orders a prefix before its extensions", { abc = 1, a = 1, ab = 1 },
        { { "a", 1 }, { "ab", 1 }, { "abc", 1 } } },
      { "keeps only the ten most frequent", twelve,
        { { "w12", 12 }, { "w11", 11 }, { "w10", 10 }, { "w09", 9 },
          { "w08", 8 }, { "w07", 7 }, { "w06", 6 }, { "w05", 5 },
          { "w04", 4 }, { "w03", 3 } } },
      { "keeps the first words in byte order when ties cross the cut",
        twelve_ties,
        { { "w01", 1 }, { "w02", 1 }, { "w03", 1 }, { "w04", 1 },
          { "w05", 1 }, { "w06", 1 }, { "w07", 1 }, { "w08", 1 },
          { "w09", 1 }, { "w10", 1 } } },
      { "returns an empty list for no words", {}, {} },
    }
    for _, row in ipairs(rows) do
      local name, counts, expected = table.unpack(row)
      it(name, function()
        assert.same(expected, job.top_words(counts))
      end)
    end

    it("returns the same list whatever order the counts were built in",
      function()
        local forward, backward = {}, {}
        for i = 1, 200 do
          forward["k" .. i] = i % 7
        end
        for i = 200, 1, -1 do
          backward["k" .. i] = i % 7
        end
        assert.same(job.top_words(forward), job.top_words(backward))
      end)
  end)


  describe("analyze", function()
    local rows = {
      { "counts turns, roles, characters and words", {}, DEFAULT_STATS },
      { "counts 你好，世界 as 5 characters and 4 words",
        { language = "chinese", topic = ABSENT,
          conversation_log = { turn("user", "你好，世界") } },
        { conversation_id = "english-greetings-0001", language = "chinese",
          turns = 1, turns_by_role = { user = 1 }, chars = 5, words = 4,
          top_words = { { "世", 1 }, { "你", 1 }, { "好", 1 },
            { "界", 1 } } } },
      { "folds ASCII capitals only in top words",
        { conversation_log = { turn("user", "Der der DER Ärger ärger") } },
        { conversation_id = "english-greetings-0001", language = "english",
          topic = "greetings", turns = 1, turns_by_role = { user = 1 },
          chars = 23, words = 5,
          top_words = { { "der", 3 }, { "Ärger", 1 }, { "ärger", 1 } } } },
      { "counts roles beyond user and assistant",
        { conversation_log = { turn("system", "Be brief."),
          turn("user", "Hi"), turn("user", "Hi") } },
        { conversation_id = "english-greetings-0001", language = "english",
          topic = "greetings", turns = 3,
          turns_by_role = { system = 1, user = 2 }, chars = 13, words = 4,
          top_words = { { "hi", 2 }, { "be", 1 }, { "brief", 1 } } } },
      { "gives zeros for an empty log", { conversation_log = {} },
        { conversation_id = "english-greetings-0001", language = "english",
          topic = "greetings", turns = 0, turns_by_role = {}, chars = 0,
          words = 0, top_words = {} } },
      { "counts a turn with empty content",
        { conversation_log = { turn("user", "") } },
        { conversation_id = "english-greetings-0001", language = "english",
          topic = "greetings", turns = 1, turns_by_role = { user = 1 },
          chars = 0, words = 0, top_words = {} } },
      { "ignores extra fields of a turn",
        { conversation_log = { { role = "user", content = "ok",
          ts = "2024-01-01T00:00:00Z" } } },
        { conversation_id = "english-greetings-0001", language = "english",
          topic = "greetings", turns = 1, turns_by_role = { user = 1 },
          chars = 2, words = 1, top_words = { { "ok", 1 } } } },
      { "drops language and topic that are not strings",
        { language = null, topic = 7, conversation_log = {} },
        { conversation_id = "english-greetings-0001", turns = 0,
          turns_by_role = {}, chars = 0, words = 0, top_words = {} } },
      { "drops a language that PostgreSQL would refuse",
        { language = "en\0", topic = "\255", conversation_log = {} },
        { conversation_id = "english-greetings-0001", turns = 0,
          turns_by_role = {}, chars = 0, words = 0, top_words = {} } },
    }
    for _, row in ipairs(rows) do
      local name, over, expected = table.unpack(row)
      it(name, function()
        assert.same(expected, job.analyze(helpers.body(over)))
      end)
    end
    -- ASCII text without an apostrophe takes a shorter path than the
    -- rest; one non-ASCII word sends the same text down the other one.
    it("counts ASCII words the same on both paths", function()
      local text = "Order 66 shipped; order-66 SHIPPED twice, at 3.14pm."
      local plain = job.analyze(helpers.body({
        conversation_log = { turn("user", text) } }))
      local mixed = job.analyze(helpers.body({
        conversation_log = { turn("user", text .. " café") } }))
      local top = { { "66", 2 }, { "order", 2 }, { "shipped", 2 },
        { "14pm", 1 }, { "3", 1 }, { "at", 1 }, { "twice", 1 } }
      assert.equal(10, plain.words)
      assert.same(top, plain.top_words)
      assert.equal(11, mixed.words)
      table.insert(top, 7, { "café", 1 })
      assert.same(top, mixed.top_words)
    end)
  end)


  describe("analyze refusals", function()
    local long_id = string.rep("x", 513)
    local rows = {
      { "refuses a missing conversation_id",
        { conversation_id = ABSENT }, "conversation_id is missing" },
      { "refuses a null conversation_id", { conversation_id = null },
        "conversation_id must be a string, got null" },
      { "refuses a numeric conversation_id", { conversation_id = 42 },
        "conversation_id must be a string, got number" },
      { "refuses an empty conversation_id", { conversation_id = "" },
        "conversation_id is empty" },
      { "refuses a conversation_id over 512 bytes",
        { conversation_id = long_id },
        "conversation_id is 513 bytes, over 512" },
      { "refuses a conversation_id that is not UTF-8",
        { conversation_id = "abc\192" },
        "conversation_id is not valid UTF-8 (byte 4)" },
      { "refuses a conversation_id with a NUL", { conversation_id = "a\0b" },
        "conversation_id contains a NUL character" },
      { "refuses a missing conversation_log",
        { conversation_log = ABSENT }, "conversation_log is missing" },
      { "refuses a string conversation_log", { conversation_log = "hi" },
        "conversation_log must be an array, got string" },
      { "refuses a null conversation_log", { conversation_log = null },
        "conversation_log must be an array, got null" },
      { "refuses an object conversation_log",
        { conversation_log = { first = turn("user", "hi") } },
        "conversation_log must be an array, got object" },
      { "refuses a conversation_log with keys besides 1..n",
        { conversation_log = { turn("user", "hi"), extra = true } },
        "conversation_log must be an array, got object" },
      { "refuses a turn that is a string",
        { conversation_log = { turn("user", "hi"), "hello" } },
        "conversation_log turn 2 must be an object, got string" },
      { "refuses a turn that is null",
        { conversation_log = { null } },
        "conversation_log turn 1 must be an object, got null" },
      { "refuses a turn without a role",
        { conversation_log = { { content = "hi" } } },
        "conversation_log turn 1: role is missing" },
      { "refuses a numeric role",
        { conversation_log = { turn(1, "hi") } },
        "conversation_log turn 1: role must be a string, got number" },
      { "refuses an empty role",
        { conversation_log = { turn("", "hi") } },
        "conversation_log turn 1: role is empty" },
      { "refuses a role that is not UTF-8",
        { conversation_log = { turn("us\128er", "hi") } },
        "conversation_log turn 1: role is not valid UTF-8 (byte 3)" },
      { "refuses a turn without content",
        { conversation_log = { turn("user", "hi"), { role = "assistant" } } },
        "conversation_log turn 2: content is missing" },
      { "refuses null content",
        { conversation_log = { turn("user", "hi"), turn("assistant", null) } },
        "conversation_log turn 2: content must be a string, got null" },
      { "refuses numeric content",
        { conversation_log = { turn("user", 12) } },
        "conversation_log turn 1: content must be a string, got number" },
      { "refuses array content",
        { conversation_log = { turn("user", { "a", "b" }) } },
        "conversation_log turn 1: content must be a string, got array" },
      { "refuses object content",
        { conversation_log = { turn("user", { text = "a" }) } },
        "conversation_log turn 1: content must be a string, got object" },
      { "refuses content that is not UTF-8",
        { conversation_log = { turn("user", "ok"),
          turn("assistant", "hello\255") } },
        "conversation_log turn 2: content is not valid UTF-8 (byte 6)" },
      { "refuses content with an overlong encoding",
        { conversation_log = { turn("user", "\192\175") } },
        "conversation_log turn 1: content is not valid UTF-8 (byte 1)" },
    }
    for _, row in ipairs(rows) do
      local name, over, reason = table.unpack(row)
      it(name, function()
        local stats, got = job.analyze(helpers.body(over))
        assert.is_nil(stats)
        assert.equal(reason, got)
      end)
    end
  end)


  describe("init", function()
    it("creates conversation_stats when it is missing", function()
      local host = helpers.fake_host()
      job.init(host)

      assert.equal(1, #host.queries)
      local sql = host.queries[1].sql
      assert.is_truthy(sql:find(
        "^CREATE TABLE IF NOT EXISTS conversation_stats %("))
      assert.is_truthy(sql:find("conversation_id text PRIMARY KEY", 1, true))
      assert.is_truthy(sql:find("deliveries integer NOT NULL DEFAULT 1", 1,
        true))
      assert.equal(0, host.queries[1].params.n)
    end)

    it("lets a database error stop start-up", function()
      local host = helpers.fake_host({
        db_error = "SQLSTATE 42501: permission denied for schema public" })
      assert.has_error(function() job.init(host) end,
        "SQLSTATE 42501: permission denied for schema public")
    end)
  end)


  describe("handle", function()
    local host
    before_each(function()
      host = helpers.fake_host()
    end)

    it("returns true after one upsert", function()
      local ok, reason = job.handle(helpers.message(), host)
      assert.is_true(ok)
      assert.is_nil(reason)
      assert.equal(1, #host.queries)
    end)

    it("upserts through placeholders only", function()
      job.handle(helpers.message(), host)

      local sql = host.queries[1].sql
      assert.is_truthy(sql:find("^INSERT INTO conversation_stats"))
      assert.is_truthy(sql:find(
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9::jsonb)", 1, true))
      assert.is_truthy(sql:find("ON CONFLICT (conversation_id) DO UPDATE SET",
        1, true))
      assert.is_truthy(sql:find(
        "deliveries = conversation_stats.deliveries + 1", 1, true))
      assert.is_truthy(sql:find("updated_at = now()", 1, true))
      assert.is_nil(sql:find("english-greetings-0001", 1, true))
      assert.is_nil(sql:find("msg-0001", 1, true))
    end)

    it("passes the values as params", function()
      job.handle(helpers.message(), host)

      assert.same({
        n = 9,
        "english-greetings-0001", "msg-0001", "english", "greetings", 2,
        '{"assistant":1,"user":1}', 42, 10,
        '[["are",2],["how",2],["you",2],["am",1],["fine",1],["hello",1],'
          .. '["i",1]]',
      }, host.queries[1].params)
    end)

    it("sends the same params for a second identical message", function()
      job.handle(helpers.message(), host)
      job.handle(helpers.message({}, { redelivered = true,
        delivery_tag = 2 }), host)

      assert.equal(2, #host.queries)
      assert.equal(host.queries[1].sql, host.queries[2].sql)
      assert.same(host.queries[1].params, host.queries[2].params)
    end)

    it("writes an empty object and an empty array for an empty log",
      function()
        job.handle(helpers.message({ conversation_log = {} }), host)

        local params = host.queries[1].params
        assert.equal("{}", params[6])
        assert.equal("[]", params[9])
      end)

    it("passes nil for a missing message id, language and topic", function()
      job.handle(helpers.message({ language = ABSENT, topic = null },
        { message_id = ABSENT }), host)

      local params = host.queries[1].params
      assert.equal(9, params.n)
      assert.is_nil(params[2])
      assert.is_nil(params[3])
      assert.is_nil(params[4])
    end)

    it("logs the counts at debug level without the content", function()
      job.handle(helpers.message(), host)

      assert.same({ {
        level = "debug",
        event = "conversation_stats_stored",
        fields = { conversation_id = "english-greetings-0001", turns = 2,
          chars = 42, words = 10 },
      } }, host.logs)
    end)

    it("returns false and the reason for refused content", function()
      local ok, reason = job.handle(helpers.message({
        conversation_id = ABSENT }), host)

      assert.is_false(ok)
      assert.equal("conversation_id is missing", reason)
      assert.equal(0, #host.queries)
    end)

    it("refuses a body that is not an object", function()
      local msg = helpers.message()
      msg.body = "just text"

      local ok, reason = job.handle(msg, host)
      assert.is_false(ok)
      assert.equal("body must be a JSON object, got string", reason)
    end)

    it("raises the database error as a job error", function()
      host = helpers.fake_host({
        db_error = "SQLSTATE 40P01: deadlock detected" })
      assert.has_error(function() job.handle(helpers.message(), host) end,
        "SQLSTATE 40P01: deadlock detected")
    end)

    it("raises when the upsert affects no row", function()
      host = helpers.fake_host({ affected = 0 })
      local message = helpers.error_of(job.handle, helpers.message(), host)
      assert.equal("failed to upsert conversation_stats: 0 rows affected",
        message)
    end)

    it("stores without a row count when the host sent the upsert ahead",
      function()
        host = helpers.fake_host({ sent_ahead = true, affected = 0 })
        assert.is_true(job.handle(helpers.message(), host))
        assert.equal(1, #host.queries)
      end)
  end)


  describe("in the host sandbox", function()
    it("loads and handles a message with only the sandbox globals",
      function()
        local sandboxed = helpers.sandbox_load(
          "scripts/analyze_conversation.lua")
        local host = helpers.fake_host()
        sandboxed.init(host)

        assert.is_true(sandboxed.handle(helpers.message(), host))
        assert.equal(2, #host.queries)
      end)
  end)


  describe("on the corpus", function()
    it("counts every turn of the first 200 conversations", function()
      local bodies = helpers.corpus(200)
      assert.equal(200, #bodies)

      for _, body in ipairs(bodies) do
        local stats, reason = job.analyze(body)
        assert.is_nil(reason, body.conversation_id)
        assert.equal(#body.conversation_log, stats.turns, body.conversation_id)
      end
    end)

    it("counts every code point and tallies every turn by role", function()
      for _, body in ipairs(helpers.corpus(200)) do
        local stats = job.analyze(body)
        local chars, by_role = 0, {}
        for _, t in ipairs(body.conversation_log) do
          chars = chars + utf8.len(t.content)
          by_role[t.role] = (by_role[t.role] or 0) + 1
        end
        assert.equal(chars, stats.chars, body.conversation_id)
        assert.same(by_role, stats.turns_by_role, body.conversation_id)
      end
    end)

    it("writes JSON that decodes to the same roles and top words",
      function()
        local cjson = require "cjson"
        for _, body in ipairs(helpers.corpus(200)) do
          local stats = job.analyze(body)
          local host = helpers.fake_host()
          assert.is_true(job.handle({ body = body, properties = {} }, host))
          local params = host.queries[1].params
          assert.same(stats.turns_by_role, cjson.decode(params[6]))
          local pairs_back = cjson.decode(params[9])
          assert.equal(#stats.top_words, #pairs_back)
          for i, pair in ipairs(stats.top_words) do
            assert.same(pair, pairs_back[i], body.conversation_id)
          end
        end
      end)
  end)


  describe("json_string", function()
    local cjson = require "cjson"

    it("escapes quotes, backslashes and every control character",
      function()
        local all = {}
        for code = 0, 31 do
          all[#all + 1] = string.char(code)
        end
        local text = 'a"b\\c/' .. table.concat(all) .. "\127 é 字"
        local written = job.json_string(text)
        assert.equal(text, cjson.decode(written))
        assert.is_nil(written:find("[%z\1-\31]"))
      end)

    it("leaves plain text as it is", function()
      assert.equal('"user"', job.json_string("user"))
      assert.equal('"ünïcödé"', job.json_string("ünïcödé"))
    end)

    it("lets a role with a quote through handle as valid JSON", function()
      local host = helpers.fake_host()
      job.handle(helpers.message({ conversation_log = {
        turn('say "hi"\\', "hello there"),
      } }), host)
      assert.same({ ['say "hi"\\'] = 1 },
        cjson.decode(host.queries[1].params[6]))
    end)
  end)
end)
