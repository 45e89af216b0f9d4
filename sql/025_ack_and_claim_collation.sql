-- celers_ack_and_claim (017) again, its text parameters and variables declared with the shared
-- columns' collation (020). Declared with only CHARACTER SET utf8mb4 they take the character
-- set's default collation (utf8mb4_general_ci on MariaDB 10.x, another on MySQL 8 and MariaDB
-- 11), and `id = p_ack_id` against a utf8mb4_unicode_ci column is an "Illegal mix of
-- collations". Against our utf8mb4_bin columns (queue, claim_id) the binary collation wins, so
-- every definition of this procedure must declare its text parameters and variables
-- CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci.
DROP PROCEDURE IF EXISTS celers_ack_and_claim;

DELIMITER //
CREATE PROCEDURE celers_ack_and_claim(
    IN p_ack_id    CHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_ack_claim CHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_queue     VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_worker    VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_claim     CHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_lease     DOUBLE)
BEGIN
    DECLARE v_acked INT DEFAULT 0;
    DECLARE v_id CHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci DEFAULT NULL;
    DECLARE v_now DATETIME(6) DEFAULT NULL;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_id = NULL;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        ROLLBACK;
        RESIGNAL;
    END;

    START TRANSACTION;
    IF p_ack_id IS NOT NULL THEN
        UPDATE celers_tasks
           SET state = 'completed', completed_at = NOW(6), lease_expires_at = NULL
         WHERE id = p_ack_id AND state = 'processing'
           AND claim_id <=> COALESCE(p_ack_claim, claim_id);
        SET v_acked = ROW_COUNT();
    END IF;

    SELECT id, NOW(6) INTO v_id, v_now
      FROM celers_tasks FORCE INDEX (idx_celers_tasks_claim)
     WHERE queue = p_queue AND state = 'pending' AND scheduled_at <= NOW(6)
       AND NOT EXISTS (SELECT 1 FROM celers_queue_pauses WHERE queue = p_queue)
     ORDER BY claim_rank, scheduled_at, id
     LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF v_id IS NOT NULL THEN
        UPDATE celers_tasks
           SET state = 'processing', started_at = v_now, worker_id = p_worker,
               claim_id = p_claim, retry_count = retry_count + 1,
               lease_expires_at = DATE_ADD(v_now, INTERVAL
                   ROUND(1000000 * COALESCE(timeout_seconds, p_lease)) MICROSECOND)
         WHERE id = v_id;
    END IF;
    COMMIT;

    -- Times as Unix seconds; UNIX_TIMESTAMP() is NULL past 2038 on MariaDB before 11.5.
    SELECT t.id, t.task_name, t.payload, t.payload_type, t.priority, t.retry_count,
           t.max_retries, t.queue, t.state,
           CAST(TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'1970-01-01 00:00:00', t.created_at)
                AS DECIMAL(26, 6)) / 1000000,
           CAST(TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'1970-01-01 00:00:00', t.scheduled_at)
                AS DECIMAL(26, 6)) / 1000000,
           CAST(TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'1970-01-01 00:00:00', t.started_at)
                AS DECIMAL(26, 6)) / 1000000,
           CAST(TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'1970-01-01 00:00:00', t.completed_at)
                AS DECIMAL(26, 6)) / 1000000,
           t.worker_id, t.error_message, t.metadata, t.claim_id,
           CAST(TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'1970-01-01 00:00:00', t.lease_expires_at)
                AS DECIMAL(26, 6)) / 1000000,
           t.timeout_seconds, t.idempotency_key, v_acked
      FROM (SELECT 1 AS one) AS d
      LEFT JOIN celers_tasks AS t ON t.id = v_id;
END //
DELIMITER ;
