-- Tasks whose time has not come leave the claim's index range: they wait in state
-- 'scheduled' until the staging step (csrc/staging.c) promotes them to 'pending'.
-- Safe to run again.
-- On a database the Rust broker created, its CHECK on state (the five states it knows) goes
-- first (020 would drop it too, later), and its own future rows stay 'pending': its claim
-- reads only 'pending' (their metadata has a string `enqueued_at`, see 022).
DROP PROCEDURE IF EXISTS celers_drop_rust_state_check;

DELIMITER //
CREATE PROCEDURE celers_drop_rust_state_check()
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.table_constraints
                WHERE table_schema = DATABASE() AND table_name = 'celers_tasks'
                  AND constraint_name = 'chk_state' AND constraint_type = 'CHECK') THEN
        ALTER TABLE celers_tasks DROP CONSTRAINT chk_state;
    END IF;
END //
DELIMITER ;

CALL celers_drop_rust_state_check();
DROP PROCEDURE celers_drop_rust_state_check;

UPDATE celers_tasks SET state = 'scheduled' WHERE state = 'pending' AND scheduled_at > NOW(6)
   AND COALESCE(JSON_TYPE(JSON_EXTRACT(metadata, '$.enqueued_at')), '') <> 'STRING';
