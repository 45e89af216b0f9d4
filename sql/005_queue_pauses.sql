-- A paused queue has a row here; every worker in every process checks it on claim.
CREATE TABLE IF NOT EXISTS celers_queue_pauses (
    queue     VARCHAR(255) NOT NULL,
    paused_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (queue)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
