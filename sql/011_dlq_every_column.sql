-- The dead-letter queue keeps every column of the task it holds, so that requeue_from_dlq
-- brings the task back as it was (its own timeout above all: a long task requeued with the
-- default lease could run twice at once) and the claim that failed stays inspectable.
-- Rows dead-lettered before this migration (or by the Rust broker) read these as NULL.
ALTER TABLE celers_dead_letter_queue
    ADD COLUMN timeout_seconds  DOUBLE       NULL,
    ADD COLUMN idempotency_key  VARCHAR(255) NULL,
    ADD COLUMN state            VARCHAR(20)  NULL,
    ADD COLUMN scheduled_at     DATETIME(6)  NULL,
    ADD COLUMN started_at       DATETIME(6)  NULL,
    ADD COLUMN completed_at     DATETIME(6)  NULL,
    ADD COLUMN worker_id        VARCHAR(255) NULL,
    ADD COLUMN claim_id         CHAR(36)     NULL,
    ADD COLUMN lease_expires_at DATETIME(6)  NULL;
