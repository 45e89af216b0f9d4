-- Concurrency and rate limits per task name, enforced by the claim (csrc/task_limits.c).
-- celers_task_limits holds one row per limited name; a claimer locks that row (SKIP LOCKED)
-- while it counts and claims, so claimers of one name take turns and the counts they read are
-- the committed truth. task_name has the collation of celers_tasks.task_name (020) so the
-- claim's NOT EXISTS probe is an equality on the primary key.
CREATE TABLE IF NOT EXISTS celers_task_limits (
    task_name    VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    max_running  INT UNSIGNED NULL,
    partition_by VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    rate_limit   INT UNSIGNED NULL,
    rate_period  DOUBLE NULL,
    updated_at   DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (task_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- The rate limit's log: one row per claim that started `started` tasks of a name at
-- started_at (the claim's NOW(6), the tasks' started_at). Rows older than the period are
-- deleted by the next claim of that name.
CREATE TABLE IF NOT EXISTS celers_task_starts (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    task_name  VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    started_at DATETIME(6) NOT NULL,
    started    INT UNSIGNED NOT NULL,
    PRIMARY KEY (id),
    INDEX idx_celers_task_starts_name (task_name, started_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- The limited claim reads the waiting tasks of one name in claim order, and counts the
-- processing ones, from this index alone: (task_name, 'pending', queue) is a range in
-- (claim_rank, scheduled_at, id) order, (task_name, 'processing') a range to count.
ALTER TABLE celers_tasks
    ADD INDEX idx_celers_tasks_limited (task_name, state, queue, claim_rank, scheduled_at, id);

-- celers_ack_and_claim (025) again, leaving limited names to the limited claim: a name with a
-- row in celers_task_limits is never claimed here (the C side claims those under the limit's
-- lock). The body is 025's otherwise, text parameters declared utf8mb4_unicode_ci as 025 says.
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
       AND NOT EXISTS (SELECT 1 FROM celers_task_limits AS l
                        WHERE l.task_name = celers_tasks.task_name)
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
