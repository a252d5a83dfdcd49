-- Argo CD health check for serving.inference-operator.io/InferenceService. Install it as the
-- resource customization resource.customizations.health.serving.inference-operator.io_InferenceService
-- (see the README). It reads only status, which the operator alone writes:
--   Progressing  the operator has not observed the current spec yet, or a rollout or canary runs;
--   Suspended    a canary is paused (by annotation or at a manual gate);
--   Degraded     a failure that needs a person (Stalled or Degraded), or a rolled-back revision;
--   Healthy      Ready for the current generation (scaled to zero on purpose included).
local hs = {}

local function condition(ctype)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function said(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

local generation = obj.metadata.generation
if obj.status == nil or obj.status.observedGeneration == nil or
    (generation ~= nil and obj.status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the current spec"
  return hs
end

local canary = obj.status.canary
if canary ~= nil and canary.phase == "Paused" then
  hs.status = "Suspended"
  hs.message = "Canary of revision " .. (canary.revision or "?") .. " is paused"
  return hs
end

for _, ctype in ipairs({"Degraded", "Stalled"}) do
  local c = condition(ctype)
  if c ~= nil and c.status == "True" then
    hs.status = "Degraded"
    hs.message = said(c)
    return hs
  end
end

local progressing = condition("Progressing")
if progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = said(progressing)
  return hs
end

local ready = condition("Ready")
if ready ~= nil and (ready.status == "True" or ready.reason == "ScaledToZero") and
    (ready.observedGeneration == nil or generation == nil or ready.observedGeneration == generation) then
  hs.status = "Healthy"
  hs.message = said(ready)
  return hs
end

hs.status = "Progressing"
if ready ~= nil then
  hs.message = said(ready)
else
  hs.message = "Waiting for the Ready condition"
end
return hs
