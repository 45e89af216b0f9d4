-- The dead-letter queue keeps every column of the task it holds, so that requeue_from_dlq
-- brings the task back as it was (its own timeout above all: a long task requeued with the
-- default lease could run twice at once) and the claim that failed stays inspectable.
-- Rows dead-lettered before this migration (or by the Rust broker) read these as NULL.
-- Text columns name their collation, the same as the task column they copy (lua-020), so the
-- table reads the same whichever broker created it.
ALTER TABLE celers_dead_letter_queue
    ADD COLUMN timeout_seconds  DOUBLE       NULL,
    ADD COLUMN idempotency_key  VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    ADD COLUMN state            VARCHAR(20)  CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NULL,
    ADD COLUMN scheduled_at     DATETIME(6)  NULL,
    ADD COLUMN started_at       DATETIME(6)  NULL,
    ADD COLUMN completed_at     DATETIME(6)  NULL,
    ADD COLUMN worker_id        VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NULL,
    ADD COLUMN claim_id         CHAR(36)     CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    ADD COLUMN lease_expires_at DATETIME(6)  NULL;
