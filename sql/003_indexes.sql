-- Indexes for the dead-letter queue: lookup by original task and listing by age.
CREATE INDEX idx_celers_dlq_task ON celers_dead_letter_queue (task_id);
CREATE INDEX idx_celers_dlq_failed ON celers_dead_letter_queue (failed_at);
