-- The celers-broker-sql 0.2 tables: tasks, dead-letter queue and task history.
-- Column names, types and meanings are shared with the Rust broker.
CREATE TABLE IF NOT EXISTS celers_tasks (
    id            CHAR(36)     NOT NULL,
    task_name     VARCHAR(255) NOT NULL,
    payload       MEDIUMBLOB   NOT NULL,
    state         VARCHAR(20)  NOT NULL DEFAULT 'pending',
    priority      INT          NOT NULL DEFAULT 0,
    retry_count   INT          NOT NULL DEFAULT 0,
    max_retries   INT          NOT NULL DEFAULT 3,
    created_at    DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    scheduled_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    started_at    DATETIME(6)  NULL,
    completed_at  DATETIME(6)  NULL,
    worker_id     VARCHAR(255) NULL,
    error_message TEXT         NULL,
    metadata      JSON         NULL,
    PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS celers_dead_letter_queue (
    id            CHAR(36)     NOT NULL,
    task_id       CHAR(36)     NOT NULL,
    task_name     VARCHAR(255) NOT NULL,
    payload       MEDIUMBLOB   NOT NULL,
    retry_count   INT          NOT NULL DEFAULT 0,
    error_message TEXT         NULL,
    failed_at     DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    metadata      JSON         NULL,
    PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS celers_task_history (
    id            BIGINT       NOT NULL AUTO_INCREMENT,
    task_id       CHAR(36)     NOT NULL,
    task_name     VARCHAR(255) NOT NULL,
    state         VARCHAR(20)  NOT NULL,
    worker_id     VARCHAR(255) NULL,
    error_message TEXT         NULL,
    created_at    DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (id),
    INDEX idx_celers_history_task (task_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
