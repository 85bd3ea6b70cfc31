-- pool_status.lua: lock status of every member of a lock pool.
--
-- KEYS[1]  pool set
-- ARGV[1]  lock key prefix of the members; a member's lock key is ARGV[1]..member
-- ARGV[2]  "counts" to return only {locked, free}; anything else for the list
--
-- Member lock keys are computed here from ARGV[1], so they are not declared
-- in KEYS: the member set is only known inside the script. They share the
-- pool's hash tag, so they live in the slot of KEYS[1] and the script runs on
-- Redis Cluster. The cost grows with the number of members.
-- Returns {locked, free} for "counts", otherwise a flat array
-- {member1, flag1, member2, flag2, ...} where flag is 1 when locked.
local members = redis.call('SMEMBERS', KEYS[1])
local counts = ARGV[2] == 'counts'
local out, locked = {}, 0
for _, m in ipairs(members) do
  local flag = redis.call('EXISTS', ARGV[1] .. m)
  locked = locked + flag
  if not counts then
    out[#out + 1] = m
    out[#out + 1] = flag
  end
end
if counts then
  return {locked, #members - locked}
end
return out
