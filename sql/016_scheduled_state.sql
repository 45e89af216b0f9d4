-- Tasks whose time has not come leave the claim's index range: they wait in state
-- 'scheduled' until the staging step (csrc/staging.c) promotes them to 'pending'.
-- Safe to run again.
UPDATE celers_tasks SET state = 'scheduled' WHERE state = 'pending' AND scheduled_at > NOW(6);
