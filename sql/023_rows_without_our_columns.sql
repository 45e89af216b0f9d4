-- Rows the Rust broker inserts leave our columns at their defaults; they must still land in
-- the right queue with the right payload type. Defaults become '' (no queue or payload type of
-- ours is empty) and a trigger fills them in on insert:
-- * a row requeued by the Rust broker from our dead-letter queue carries the task's queue and
--   payload type in metadata._celers_origin (024 puts it there); they are taken back and the
--   key removed, restoring the metadata as it was;
-- * otherwise the queue is metadata.queue (where the Rust broker records it), else 'default';
--   the payload type is 'raw' (Rust payloads are bytes); a Rust metadata.timeout_secs becomes
--   the task's lease (timeout_seconds) unless one was given.
-- Inserts that set these columns (all of ours) keep them as given. Rows the Rust broker wrote
-- before this migration (tasks and dead-letter entries: their metadata has a string
-- `enqueued_at`) move to the queue their metadata names.
UPDATE celers_tasks SET queue = JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.queue'))
 WHERE queue = 'default' AND JSON_TYPE(JSON_EXTRACT(metadata, '$.enqueued_at')) = 'STRING'
   AND JSON_TYPE(JSON_EXTRACT(metadata, '$.queue')) = 'STRING'
   AND CHAR_LENGTH(JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.queue'))) > 0;

UPDATE celers_dead_letter_queue SET queue = JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.queue'))
 WHERE queue = 'default' AND JSON_TYPE(JSON_EXTRACT(metadata, '$.enqueued_at')) = 'STRING'
   AND JSON_TYPE(JSON_EXTRACT(metadata, '$.queue')) = 'STRING'
   AND CHAR_LENGTH(JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.queue'))) > 0;

DROP TRIGGER IF EXISTS celers_tasks_fill_ours;

DELIMITER //
CREATE TRIGGER celers_tasks_fill_ours BEFORE INSERT ON celers_tasks FOR EACH ROW
BEGIN
    IF JSON_TYPE(JSON_EXTRACT(NEW.metadata, '$._celers_origin')) = 'OBJECT' THEN
        IF CHAR_LENGTH(NEW.queue) = 0 THEN
            SET NEW.queue = COALESCE(
                JSON_UNQUOTE(JSON_EXTRACT(NEW.metadata, '$._celers_origin.queue')), '');
        END IF;
        IF CHAR_LENGTH(NEW.payload_type) = 0 THEN
            SET NEW.payload_type = COALESCE(
                JSON_UNQUOTE(JSON_EXTRACT(NEW.metadata, '$._celers_origin.payload_type')), '');
        END IF;
        IF JSON_UNQUOTE(JSON_EXTRACT(NEW.metadata, '$._celers_origin.metadata_null')) = '1' THEN
            SET NEW.metadata = NULL;
        ELSE
            SET NEW.metadata = JSON_REMOVE(NEW.metadata, '$._celers_origin');
        END IF;
    END IF;
    IF CHAR_LENGTH(NEW.queue) = 0 THEN
        IF JSON_TYPE(JSON_EXTRACT(NEW.metadata, '$.queue')) = 'STRING' THEN
            SET NEW.queue = JSON_UNQUOTE(JSON_EXTRACT(NEW.metadata, '$.queue'));
        END IF;
        IF CHAR_LENGTH(NEW.queue) = 0 THEN
            SET NEW.queue = 'default';
        END IF;
        IF NEW.timeout_seconds IS NULL
           AND JSON_TYPE(JSON_EXTRACT(NEW.metadata, '$.timeout_secs'))
               IN ('INTEGER', 'UNSIGNED INTEGER', 'DOUBLE', 'DECIMAL')
           AND JSON_EXTRACT(NEW.metadata, '$.timeout_secs') > 0 THEN
            SET NEW.timeout_seconds = JSON_EXTRACT(NEW.metadata, '$.timeout_secs');
        END IF;
    END IF;
    IF CHAR_LENGTH(NEW.payload_type) = 0 THEN
        SET NEW.payload_type = 'raw';
    END IF;
END //
DELIMITER ;

ALTER TABLE celers_tasks
    ALTER COLUMN queue SET DEFAULT '',
    ALTER COLUMN payload_type SET DEFAULT '';
