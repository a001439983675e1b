#!/usr/bin/env bash
# Issue 2's acceptance run: the whole corpus plus twelve messages that
# probe the gates, drained twice. Checks that every conversation is stored
# once with the right turn count, that exactly the nine refused messages
# are dead-lettered, that large-but-allowed logs are stored with a
# warning, and that a 64 MiB body never raised the worker's peak RSS
# past 64 MiB.
. "$(dirname "$0")/lib.sh"

publish_specials() {
  local kind bytes id
  while read -r kind bytes id; do
    "$MRCTL" gen "$kind" "$bytes" --id "$id" >"$WORK/$id"
    "$MRCTL" publish "$WORK/$id" --message-id "$id" >/dev/null
    rm -f "$WORK/$id"
  done <<'LIST'
pad 2097153 big-1
pad 3000000 big-2
pad 67108864 big-64m
log 1600000 log-over-1
log 1700000 log-over-2
log 2000000 log-over-3
log 600000 log-warn-1
log 1000000 log-warn-2
log 1500000 log-warn-3
junk 100 junk-1
junk 4096 junk-2
junk 70000 junk-3
LIST
}

"$MRCTL" publish-jsonl "$CORPUS" >/dev/null
publish_specials
check "queue holds corpus and specials" 7485 "$(depth "$AMQP_QUEUE")"

rc=$(run_worker "$WORK/run1.log")
check "first run exits 0" 0 "$rc"
check "first run: ok count" 7476 "$(summary "$WORK/run1.log" ok)"
check "first run: size_limit count" 3 "$(summary "$WORK/run1.log" size_limit)"
check "first run: field_size_limit count" 3 \
  "$(summary "$WORK/run1.log" field_size_limit)"
check "first run: invalid_json count" 3 \
  "$(summary "$WORK/run1.log" invalid_json)"
check "a warning per large-but-allowed log" 3 \
  "$(count_events "$WORK/run1.log" field_size_warning)"
check "size_limit logged with the declared size" 1 \
  "$(grep -c '"message_id":"big-64m".*body_size=67108864' "$WORK/run1.log")"
peak=$(summary "$WORK/run1.log" peak_rss_kb)
check_true "peak RSS ${peak} KiB stays under 64 MiB" [ "$peak" -lt 65536 ]

# Every corpus line, compared with its row by id and turn count.
sql "CREATE TABLE corpus (line text)"
psql "$DATABASE_URL" -qX -c "\\copy corpus FROM '$CORPUS' WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
matching="SELECT count(*) FROM corpus c JOIN conversation_stats s
  ON s.conversation_id = c.line::jsonb->>'conversation_id'
  WHERE s.turns = jsonb_array_length(c.line::jsonb->'conversation_log')"
check "every corpus conversation stored with its turn count" 7473 \
  "$(sql "$matching")"
check "rows: corpus plus the three large logs" 7476 \
  "$(sql "SELECT count(*) FROM conversation_stats")"
check "large-but-allowed logs stored" "log-warn-1 log-warn-2 log-warn-3" \
  "$(sql "SELECT string_agg(conversation_id, ' ' ORDER BY conversation_id)
          FROM conversation_stats WHERE conversation_id LIKE 'log-warn%'")"

expected=$(printf '%s\n' big-1 big-2 big-64m junk-1 junk-2 junk-3 \
  log-over-1 log-over-2 log-over-3 | sort)
check "dead-letter queue holds exactly the nine refused" "$expected" \
  "$(dlq_ids)"

# The same messages again: the upsert keeps one row per conversation.
"$MRCTL" publish-jsonl "$CORPUS" >/dev/null
publish_specials
rc=$(run_worker "$WORK/run2.log")
check "second run exits 0" 0 "$rc"
check "second run leaves the row count unchanged" 7476 \
  "$(sql "SELECT count(*) FROM conversation_stats")"
check "every row was delivered twice" 7476 \
  "$(sql "SELECT count(*) FROM conversation_stats WHERE deliveries = 2")"
check "second run dead-letters the same nine" 9 "$(dlq_ids | wc -l)"

finish
