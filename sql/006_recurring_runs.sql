-- One row per (schedule, occurrence): the primary key makes each occurrence enqueue once
-- however many schedulers tick at the same moment.
CREATE TABLE IF NOT EXISTS celers_recurring_runs (
    schedule_name VARCHAR(255) NOT NULL,
    run_at        BIGINT       NOT NULL,
    task_id       CHAR(36)     NOT NULL,
    queue         VARCHAR(255) NOT NULL,
    created_at    DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (schedule_name, run_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
