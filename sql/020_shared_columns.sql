-- One schema for both brokers: the tables shared with celers-broker-sql 0.2 (Rust) get the same
-- columns, types and collations whichever broker created them.
-- * Text the Rust broker reads (ids, names, states, worker ids, errors) is utf8mb4_unicode_ci,
--   as its migrations make it: its driver (sqlx) refuses to decode a column flagged BINARY
--   (any _bin collation) as a string. Our own columns (queue, claim_id, idempotency_key,
--   payload_type, result_type) stay utf8mb4_bin: exact, case-sensitive names and keys.
-- * The Rust TIMESTAMP columns become DATETIME(6) (TIMESTAMP ends in 2038). The session is UTC,
--   so the stored instants do not move.
-- * celers_task_history is the union of both: the Rust `timestamp` and `message`, our
--   task_name (defaulting to '' so a Rust-style insert works), error_message and created_at.
-- * The Rust CHECK on celers_tasks.state goes: we also use 'scheduled'.
-- New text columns on these tables must name their collation: the table default is
-- utf8mb4_unicode_ci, like the Rust broker's.
-- celers_ddl(when, kind, table, name, ddl) runs ddl when the named column, index or CHECK
-- constraint of the table exists (when = 1) or is missing (when = 0): MySQL 8 has no
-- ADD COLUMN IF NOT EXISTS. Dropped again at the end of this file.
DROP PROCEDURE IF EXISTS celers_ddl;

DELIMITER //
CREATE PROCEDURE celers_ddl(IN p_when INT, IN p_kind VARCHAR(16), IN p_table VARCHAR(64),
                            IN p_name VARCHAR(64), IN p_ddl TEXT)
BEGIN
    DECLARE v_found INT DEFAULT 0;
    IF p_kind = 'column' THEN
        SELECT COUNT(*) INTO v_found FROM information_schema.columns
         WHERE table_schema = DATABASE() AND table_name = p_table AND column_name = p_name;
    ELSEIF p_kind = 'index' THEN
        SELECT COUNT(*) INTO v_found FROM information_schema.statistics
         WHERE table_schema = DATABASE() AND table_name = p_table AND index_name = p_name;
    ELSE
        SELECT COUNT(*) INTO v_found FROM information_schema.table_constraints
         WHERE table_schema = DATABASE() AND table_name = p_table AND constraint_name = p_name
           AND constraint_type = 'CHECK';
    END IF;
    IF (v_found > 0) = (p_when = 1) THEN
        SET @celers_ddl = p_ddl;
        PREPARE celers_ddl_statement FROM @celers_ddl;
        EXECUTE celers_ddl_statement;
        DEALLOCATE PREPARE celers_ddl_statement;
    END IF;
END //
DELIMITER ;

CALL celers_ddl(0, 'column', 'celers_task_history', 'task_name',
    'ALTER TABLE celers_task_history ADD COLUMN task_name VARCHAR(255) NOT NULL DEFAULT ''''');
CALL celers_ddl(0, 'column', 'celers_task_history', 'error_message',
    'ALTER TABLE celers_task_history ADD COLUMN error_message TEXT NULL');
CALL celers_ddl(0, 'column', 'celers_task_history', 'created_at',
    'ALTER TABLE celers_task_history ADD COLUMN created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)');
CALL celers_ddl(0, 'column', 'celers_task_history', 'timestamp',
    'ALTER TABLE celers_task_history ADD COLUMN `timestamp` DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)');
CALL celers_ddl(0, 'column', 'celers_task_history', 'message',
    'ALTER TABLE celers_task_history ADD COLUMN message TEXT NULL');
CALL celers_ddl(1, 'check', 'celers_tasks', 'chk_state',
    'ALTER TABLE celers_tasks DROP CONSTRAINT chk_state');

DROP PROCEDURE celers_ddl;

ALTER TABLE celers_tasks
    DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    MODIFY id              CHAR(36)     CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    MODIFY task_name       VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    MODIFY state           VARCHAR(20)  CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL
                           DEFAULT 'pending',
    MODIFY created_at      DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    MODIFY scheduled_at    DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    MODIFY started_at      DATETIME(6)  NULL,
    MODIFY completed_at    DATETIME(6)  NULL,
    MODIFY worker_id       VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NULL,
    MODIFY error_message   TEXT         CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NULL,
    MODIFY queue           VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
                           DEFAULT 'default',
    MODIFY claim_id        CHAR(36)     CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    MODIFY idempotency_key VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    MODIFY payload_type    VARCHAR(16)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
                           DEFAULT 'raw';

ALTER TABLE celers_dead_letter_queue
    DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    MODIFY id            CHAR(36)     CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    MODIFY task_id       CHAR(36)     CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    MODIFY task_name     VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    MODIFY retry_count   INT          NOT NULL DEFAULT 0,
    MODIFY error_message TEXT         CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NULL,
    MODIFY failed_at     DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    MODIFY queue         VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
                         DEFAULT 'default',
    MODIFY payload_type  VARCHAR(16)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
                         DEFAULT 'raw';

ALTER TABLE celers_task_history
    DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    MODIFY task_id       CHAR(36)     CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    MODIFY task_name     VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL
                         DEFAULT '',
    MODIFY state         VARCHAR(20)  CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    MODIFY worker_id     VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NULL,
    MODIFY error_message TEXT         CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NULL,
    MODIFY message       TEXT         CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NULL,
    MODIFY `timestamp`   DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    MODIFY created_at    DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    MODIFY queue         VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
                         DEFAULT 'default';

ALTER TABLE celers_results
    DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    MODIFY id            CHAR(36)     CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    MODIFY task_id       CHAR(36)     CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    MODIFY task_name     VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    MODIFY error_message TEXT         CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NULL,
    MODIFY state         VARCHAR(20)  CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL
                         DEFAULT 'pending',
    MODIFY created_at    DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    MODIFY completed_at  DATETIME(6)  NULL,
    MODIFY expires_at    DATETIME(6)  NULL,
    MODIFY queue         VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
                         DEFAULT 'default',
    MODIFY result_type   VARCHAR(16)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
                         DEFAULT 'raw';

ALTER TABLE celers_migrations
    MODIFY applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6);
