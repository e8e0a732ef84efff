-- Argo CD health check for kubetune.dev/FineTuneJob (Argo CD passes the object as the global `obj`).
-- Progressing while waiting or training, Healthy once Succeeded, Degraded when Failed, Suspended while
-- spec.suspend is true. A ModelServe in a later sync wave is therefore created only after training succeeded.
local hs = {}
local spec = obj.spec or {}
local status = obj.status

local function condition_message(kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == kind and condition.message ~= nil and condition.message ~= "" then
      return condition.message
    end
  end
  return nil
end

local function progress_text()
  local progress = status.progress
  if progress == nil or progress.totalSteps == nil or progress.totalSteps == 0 then
    return ""
  end
  local text = string.format(": %d%% (step %d/%d", math.floor(progress.percent or 0), math.floor(progress.step or 0),
    math.floor(progress.totalSteps))
  if progress.etaSeconds ~= nil then
    text = text .. string.format(", about %d min left", math.ceil(progress.etaSeconds / 60))
  end
  return text .. ")"
end

if status == nil or status.phase == nil then
  if spec.suspend == true then
    hs.status = "Suspended"
    hs.message = "Suspended before training started"
  else
    hs.status = "Progressing"
    hs.message = "Waiting for the kubetune operator"
  end
  return hs
end

local phase = status.phase
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = "Training succeeded"
  if status.metrics ~= nil and status.metrics.evalLoss ~= nil then
    hs.message = hs.message .. string.format(" (eval loss %.4f)", status.metrics.evalLoss)
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = status.message or condition_message("Failed") or "Training failed"
elseif spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended (spec.suspend is true); checkpoints are kept"
elseif phase == "Suspended" then
  hs.status = "Progressing"
  hs.message = "Resuming after suspension"
elseif phase == "Running" then
  hs.status = "Progressing"
  hs.message = "Training" .. progress_text()
elseif phase == "Pending" then
  hs.status = "Progressing"
  hs.message = status.message or "Waiting for the trainer to start"
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
