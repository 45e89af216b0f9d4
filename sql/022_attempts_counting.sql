-- max_retries counts attempts, as in celers-broker-sql 0.2 (Rust): a failed attempt goes to the
-- dead-letter queue when retry_count (attempts made, the failed one included) >= max_retries,
-- so a task gets max_retries attempts (at least one) whichever broker runs it. We used to allow
-- max_retries retries after the first attempt; rows written that way get one more so they keep
-- their number of attempts. Rows the Rust broker wrote (its enqueue always puts a string
-- `enqueued_at` in metadata) already count this way and are left alone.
-- The work and this migration's own record commit together, so it happens once even when
-- migrate() is interrupted and run again.
START TRANSACTION;

UPDATE celers_tasks SET max_retries = max_retries + 1
 WHERE COALESCE(JSON_TYPE(JSON_EXTRACT(metadata, '$.enqueued_at')), '') <> 'STRING'
   AND max_retries < 2147483647
   AND NOT EXISTS (SELECT 1 FROM celers_migrations WHERE version = 'lua-022');

UPDATE celers_dead_letter_queue SET max_retries = max_retries + 1
 WHERE COALESCE(JSON_TYPE(JSON_EXTRACT(metadata, '$.enqueued_at')), '') <> 'STRING'
   AND max_retries < 2147483647
   AND NOT EXISTS (SELECT 1 FROM celers_migrations WHERE version = 'lua-022');

INSERT INTO celers_migrations (version, name) VALUES ('lua-022', 'attempts_counting')
    ON DUPLICATE KEY UPDATE version = version;

COMMIT;
