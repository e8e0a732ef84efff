-- Argo CD health check for kubetune.dev/ModelServe (Argo CD passes the object as the global `obj`).
-- Healthy when Ready, Degraded when Failed, Progressing while waiting for adapters or deploying, and while the
-- operator has not yet acted on the latest spec (status.observedGeneration behind metadata.generation).
local hs = {}
local status = obj.status
local generation = obj.metadata and obj.metadata.generation

if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the kubetune operator"
  return hs
end

if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = string.format("Waiting for the operator to apply generation %d", math.floor(generation))
  return hs
end

local phase = status.phase
if phase == "Ready" then
  hs.status = "Healthy"
  hs.message = string.format("Serving %d/%d replicas", math.floor(status.readyReplicas or 0),
    math.floor(status.replicas or 0))
  if status.url ~= nil then
    hs.message = hs.message .. " at " .. status.url
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = status.message or "Serving failed"
elseif phase == "WaitingForAdapters" then
  hs.status = "Progressing"
  hs.message = status.message or "Waiting for the adapters' FineTuneJobs to succeed"
elseif phase == "Deploying" or phase == "Pending" then
  hs.status = "Progressing"
  hs.message = status.message or "Starting the model server"
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
