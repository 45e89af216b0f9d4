-- move_to_dlq(task_uuid): the procedure the Rust broker CALLs when a task's retries are spent,
-- with its signature and meaning (the task row is copied to the dead-letter queue under a new
-- id and deleted from celers_tasks), filling our columns as well (queue, priority, max_retries,
-- payload_type, created_at and the rest that lua-011 keeps: the same list as SQL_COPY_TO_DLQ in
-- csrc/task.c). Copy and delete are one transaction of their own. The parameter
-- carries the shared columns' collation: with the database's default collation instead, the
-- comparison with celers_tasks.id is an "Illegal mix of collations".
--
-- A dead-letter row keeps its queue and payload type in metadata._celers_origin as well: the
-- Rust requeue_from_dlq copies only task_name, payload and metadata into a new task, and 023
-- takes them back from there. Metadata that is not a JSON object (or NULL) cannot carry it; such
-- a task comes back from a Rust requeue in metadata.queue's queue or 'default', as raw bytes.
DROP TRIGGER IF EXISTS celers_dlq_keep_origin;

DELIMITER //
CREATE TRIGGER celers_dlq_keep_origin BEFORE INSERT ON celers_dead_letter_queue FOR EACH ROW
BEGIN
    -- (a row that has it already, from a restored backup say, keeps it as it is)
    IF NEW.metadata IS NULL OR (JSON_TYPE(NEW.metadata) = 'OBJECT'
                                AND JSON_EXTRACT(NEW.metadata, '$._celers_origin') IS NULL) THEN
        SET NEW.metadata = JSON_SET(COALESCE(NEW.metadata, JSON_OBJECT()), '$._celers_origin',
            JSON_OBJECT('queue', NEW.queue, 'payload_type', NEW.payload_type,
                        'metadata_null', IF(NEW.metadata IS NULL, 1, 0)));
    END IF;
END //
DELIMITER ;

DROP PROCEDURE IF EXISTS move_to_dlq;

DELIMITER //
CREATE PROCEDURE move_to_dlq(
    IN task_uuid CHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci)
BEGIN
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        ROLLBACK;
        RESIGNAL;
    END;

    START TRANSACTION;
    INSERT INTO celers_dead_letter_queue
           (id, task_id, task_name, payload, retry_count, error_message, failed_at, metadata,
            queue, priority, max_retries, payload_type, created_at, timeout_seconds,
            idempotency_key, state, scheduled_at, started_at, completed_at, worker_id, claim_id,
            lease_expires_at)
    SELECT UUID(), id, task_name, payload, retry_count, error_message, NOW(6), metadata,
           queue, priority, max_retries, payload_type, created_at, timeout_seconds,
           idempotency_key, state, scheduled_at, started_at, completed_at, worker_id, claim_id,
           lease_expires_at
      FROM celers_tasks
     WHERE id = task_uuid
       FOR UPDATE;
    DELETE FROM celers_tasks WHERE id = task_uuid;
    COMMIT;
END //
DELIMITER ;
