-- Memory governor policy for the worker host.
--
-- Every few messages and every few seconds (see limits.lua) the loop takes
-- a memory sample and calls decide(sample, state). The answer says how loud
-- to be (level, alert), how much work to take (prefetch, pause) and whether
-- to give up on this process (recycle: drain, exit 3, and let the
-- orchestrator start a clean one). The host carries the state from one call
-- to the next: the level and pause it acted on, the configured prefetch and
-- the last OOM-kill count. The module keeps nothing and does no I/O.
--
-- The figure is the working set when the cgroup reports usage, because that
-- is what the kernel and the kubelet act on (page cache they can drop is not
-- pressure), and RSS otherwise. Every threshold is a percentage of the limit.
--
-- Going up, a level or a pause takes effect as soon as the figure reaches
-- its threshold. Coming down, each waits until the figure is clearly below,
-- so a worker hovering at a threshold neither flaps its intake nor sends a
-- stream of alerts. Between the warning threshold and the pause, prefetch
-- shrinks step by step, so intake slows before it stops.

local MIB = 1024 * 1024

-- Seed: warn at 70 %. Nothing is wrong yet, but a worker that sits here
-- has less than a third of its limit for bursts, and someone should know.
-- Intake starts slowing here too (see prefetch_for).
local WARNING_PERCENT = 70

-- Seed: alert at 80 %. This is where intake stops (PAUSE_PERCENT), so the
-- alert that goes out also says the worker has stopped taking work.
local ALERT_PERCENT = 80

-- At 90 % the worker recycles. Intake has been paused since 80 %, so growth
-- past that comes from in-flight jobs or from heap the process will not
-- give back (a leak, fragmentation), and only a new process undoes that.
-- A drain loses nothing; a kernel OOM kill at 100 % loses every job in
-- flight. The last tenth of the limit is what the drain has to work in.
local CRITICAL_PERCENT = 90

-- A level drops only when the figure is 5 points under its threshold. One
-- maximal body, decoded and analysed, peaks near 10 MiB of heap (see
-- limits.lua): 4 points of a 256 MiB limit. So the garbage of a single job
-- coming and going does not move the level, its log line or its alert.
local LEVEL_BAND_PERCENT = 5

-- Seed: pause intake at 80 %, the alert threshold, for the reason given
-- there. pause is a level, not an edge: the host keeps intake stopped for
-- as long as decide says so.
local PAUSE_PERCENT = 80

-- Once paused, resume only under 70 %. The band is twice the level band
-- because a resume is followed at once by a full prefetch of bodies:
-- 16 bodies of 2 MiB are 32 MiB, 6 points of a 512 MiB limit, which must
-- fit in the band or the worker pauses again on the next sample. It is the
-- warning threshold, so intake restarts where prefetch is back to full and
-- then slows smoothly again if memory climbs.
local RESUME_PERCENT = 70

-- An OOM-kill count that rose since the last sample raises the level to at
-- least "alert" and pauses intake. The count comes from the cgroup that
-- gave the limit, which may be shared (a pod, a slice) or the whole
-- machine: if this process is still alive, a neighbour under the same limit
-- was killed, so that limit was reached moments ago whatever the figure
-- says now. Pausing adds no load while things settle; recycling would not
-- help, since the memory that ran out was not ours alone.
local OOM_KILL_LEVEL = "alert"

-- PSI is not used to decide, only reported in the alert facts. Full stalls
-- below 80 % of the working set come from reclaiming page cache, which
-- costs I/O but does not threaten an OOM kill; avg10 trails the sample by
-- up to ten seconds, and a single threshold on it would flap the level.


local LEVELS = { "ok", "warning", "alert", "critical" }

local RANK = { ok = 1, warning = 2, alert = 3, critical = 4 }

local THRESHOLD_PERCENT = {
  warning = WARNING_PERCENT,
  alert = ALERT_PERCENT,
  critical = CRITICAL_PERCENT,
}

-- The severity of the alert raised when the level rises to a level.
local SEVERITY = { warning = "warning", alert = "critical",
  critical = "critical" }


-- Shows a value in an error so that the string "8" and the number 8 differ.
local function show(value)
  if type(value) == "string" then
    return string.format("%q", value)
  end
  return tostring(value)
end


-- Raises for a sample the host should never build: the probe guarantees a
-- limit and the figures it reads.
local function check_sample(sample)
  if type(sample) ~= "table" then
    error("memory.decide: sample must be a table, got " .. type(sample), 3)
  end

  -- Written so that NaN fails too: it would make every comparison false.
  local limit = sample.limit_bytes
  local valid = type(limit) == "number" and limit > 0
  if not valid then
    error("memory.decide: limit_bytes must be a positive number, got "
      .. show(limit), 3)
  end
end


-- Raises for a state the host should never build: it passes back the level
-- it got from decide and the configured prefetch.
local function check_state(state)
  if type(state) ~= "table" then
    error("memory.decide: state must be a table, got " .. type(state), 3)
  end

  if RANK[state.level] == nil then
    error("memory.decide: state.level must be ok, warning, alert or "
      .. "critical, got " .. show(state.level), 3)
  end

  local prefetch = state.prefetch
  if math.type(prefetch) ~= "integer" or prefetch < 1 then
    error("memory.decide: state.prefetch must be an integer >= 1, got "
      .. show(prefetch), 3)
  end
end


-- Takes the sample; returns the bytes the decision rests on and the name
-- of that figure ("working_set" or "rss"). Raises when that figure is not
-- a number >= 0.
local function used_figure(sample)
  local name = "rss"
  local usage = sample.usage_bytes
  if type(usage) == "number" and usage > 0 then
    name = "working_set"
  end

  local used = sample[name .. "_bytes"]
  local valid = type(used) == "number" and used >= 0
  if not valid then
    error("memory.decide: " .. name .. "_bytes must be a number >= 0, got "
      .. show(used), 3)
  end
  return used, name
end


-- Takes the percentage used and the rank of the previous level; returns
-- the rank of the new level. Levels at or under the previous one are kept
-- down to LEVEL_BAND_PERCENT under their threshold, so several levels can
-- be dropped at once but none is dropped at its own threshold.
local function level_for(percent, previous)
  for rank = #LEVELS, 2, -1 do
    local threshold = THRESHOLD_PERCENT[LEVELS[rank]]
    if rank <= previous then
      threshold = threshold - LEVEL_BAND_PERCENT
    end
    if percent >= threshold then
      return rank
    end
  end
  return 1
end


-- Takes the percentage used and whether intake is paused now; returns
-- whether it should be paused after this sample.
local function pause_for(percent, paused)
  if paused then
    return percent >= RESUME_PERCENT
  end
  return percent >= PAUSE_PERCENT
end


-- Takes the percentage used and the configured prefetch (the ceiling);
-- returns the prefetch for this much headroom: the ceiling up to the
-- warning threshold, 1 from the pause threshold on, and a straight line
-- between them rounded to the nearest integer. The host re-issues
-- basic.qos only when the value changes.
local function prefetch_for(percent, ceiling)
  if percent >= PAUSE_PERCENT then
    return 1
  end
  if percent <= WARNING_PERCENT then
    return ceiling
  end

  local left = (PAUSE_PERCENT - percent) / (PAUSE_PERCENT - WARNING_PERCENT)
  local prefetch = 1 + math.floor((ceiling - 1) * left + 0.5)
  return math.max(1, math.min(ceiling, prefetch))
end


-- Takes the sample and the state; returns how many OOM kills happened
-- since the last sample, 0 when either count is unknown or the count went
-- down (a new cgroup).
local function oom_kills_since(sample, state)
  local now, before = sample.oom_kill_events, state.oom_kill_events
  if type(now) ~= "number" or type(before) ~= "number" or now <= before then
    return 0
  end
  return now - before
end


-- Takes the decision's reading (level, previous, percent, used, figure,
-- kills) and the sample; returns the one-line summary of an alert.
local function summary_for(reading, sample)
  local head = "memory " .. reading.level
  if reading.level == "ok" then
    head = head .. " (was " .. reading.previous .. ")"
  end

  local figure = reading.figure == "rss" and "RSS" or "working set"
  local line = string.format(
    "%s: %s at %.1f %% of limit, %.1f MiB of %.1f MiB (limit from %s)",
    head, figure, reading.percent, reading.used / MIB,
    sample.limit_bytes / MIB, tostring(sample.limit_source))

  if reading.kills > 0 then
    line = line .. string.format("; %d OOM kill%s since last sample",
      reading.kills, reading.kills == 1 and "" or "s")
  end
  return line
end


-- Takes the reading and the sample; returns the flat facts of an alert.
-- Fields the sample lacks (psi, oom_kill_events) are left out.
local function facts_for(reading, sample)
  return {
    level = reading.level,
    previous_level = reading.previous,
    ratio = reading.ratio,
    figure = reading.figure,
    used_bytes = reading.used,
    limit_bytes = sample.limit_bytes,
    limit_source = sample.limit_source,
    rss_bytes = sample.rss_bytes,
    usage_bytes = sample.usage_bytes,
    working_set_bytes = sample.working_set_bytes,
    cgroup_version = sample.cgroup_version,
    prefetch = reading.prefetch,
    oom_kills = reading.kills,
    oom_kill_events = sample.oom_kill_events,
    psi_some_avg10 = sample.psi_some_avg10,
    psi_full_avg10 = sample.psi_full_avg10,
  }
end


-- Takes the reading and the sample; returns the alert to raise, or nil.
-- A rise raises one; a return to ok from any other level resolves once;
-- any other change, or none, stays quiet.
local function alert_for(reading, sample)
  local rank, previous = RANK[reading.level], RANK[reading.previous]
  local severity
  if rank > previous then
    severity = SEVERITY[reading.level]
  elseif rank == 1 and previous > 1 then
    severity = "resolved"
  else
    return nil
  end

  return {
    kind = "memory",
    severity = severity,
    summary = summary_for(reading, sample),
    key = "memory:" .. reading.level,
    facts = facts_for(reading, sample),
  }
end


-- Accepts sample = { rss_bytes, limit_bytes, limit_source, usage_bytes,
-- working_set_bytes, cgroup_version, oom_kill_events?, psi_some_avg10?,
-- psi_full_avg10? } and state = { level, paused, prefetch,
-- oom_kill_events? }. Returns a new table owned by the caller:
-- { level, pause, recycle, prefetch, ratio, alert = table or nil }.
local function decide(sample, state)
  check_sample(sample)
  check_state(state)

  local used, figure = used_figure(sample)
  local percent = 100 * used / sample.limit_bytes
  local kills = oom_kills_since(sample, state)

  local rank = level_for(percent, RANK[state.level])
  if kills > 0 then
    rank = math.max(rank, RANK[OOM_KILL_LEVEL])
  end

  -- A worker that drains takes nothing new, whatever the figure says.
  local recycle = LEVELS[rank] == "critical"
  local pause = recycle or kills > 0 or pause_for(percent, state.paused)

  local reading = {
    level = LEVELS[rank],
    previous = state.level,
    percent = percent,
    ratio = used / sample.limit_bytes,
    used = used,
    figure = figure,
    kills = kills,
    prefetch = prefetch_for(percent, state.prefetch),
  }

  return {
    level = reading.level,
    pause = pause,
    recycle = recycle,
    prefetch = reading.prefetch,
    ratio = reading.ratio,
    alert = alert_for(reading, sample),
  }
end


return {
  decide = decide,
}
