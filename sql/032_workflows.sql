-- Workflows (celers.workflow): chains, groups, chords and batches whose dependencies live in
-- the database, so that a crash at any point resumes.
-- The tables are named celers_flow*, not celers_workflow*: celers-broker-sql 0.2 (Rust) has
-- its own celers_workflows, celers_workflow_nodes and celers_workflow_edges (its 007), with
-- other columns, and a database may be created by either broker first.
-- * celers_flows: one row per started workflow. Advancing locks this row (FOR UPDATE), so
--   two members finishing at the same moment in two processes take turns and the last one
--   sees every parent done. nodes_left counts the nodes not yet finished: when it reaches 0
--   the workflow's final state is set.
-- * celers_flow_nodes: one row per task of the workflow. task_id is generated when the
--   workflow starts, so a node's task is known (and enqueued with that id) before it exists.
--   parents_left / parents_failed count the parents not finished yet / not succeeded: a
--   parent's finish updates its children's counters once, in the same transaction as its own
--   state change. trigger_rule: all_succeeded (run once every parent succeeded, else it is
--   cancelled) or any_failed (a batch's on_failure: run once every parent finished and one did
--   not succeed, else cancelled). task_id uses the collation of celers_tasks.id, so the resume
--   sweep's joins use that table's keys. result holds the handler's return value: the bytes of
--   a string (result_type raw), else its JSON (result_type json).
-- * celers_flow_edges: parent_node -> child_node; looked up by parent when a node finishes
--   (idx_celers_flow_edges_parent) and by child for a node's parents' results (the key).
-- Each statement is restartable: CREATE TABLE IF NOT EXISTS with its indexes inside.
CREATE TABLE IF NOT EXISTS celers_flows (
    id          CHAR(36)     CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    kind        VARCHAR(16)  NOT NULL,
    name        VARCHAR(255) NULL,
    state       VARCHAR(16)  NOT NULL DEFAULT 'running',
    nodes_total INT          NOT NULL,
    nodes_left  INT          NOT NULL,
    created_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    finished_at DATETIME(6)  NULL,
    PRIMARY KEY (id),
    INDEX idx_celers_flows_state (state, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS celers_flow_nodes (
    workflow_id    CHAR(36)     CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    node           INT          NOT NULL,
    task_id        CHAR(36)     CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    task_name      VARCHAR(255) NOT NULL,
    payload        MEDIUMBLOB   NOT NULL,
    payload_type   VARCHAR(16)  NOT NULL,
    options        JSON         NULL,
    trigger_rule   VARCHAR(16)  NOT NULL DEFAULT 'all_succeeded',
    state          VARCHAR(16)  NOT NULL DEFAULT 'waiting',
    parents_left   INT          NOT NULL DEFAULT 0,
    parents_failed INT          NOT NULL DEFAULT 0,
    result         MEDIUMBLOB   NULL,
    result_type    VARCHAR(16)  NULL,
    error          TEXT         NULL,
    finished_at    DATETIME(6)  NULL,
    PRIMARY KEY (workflow_id, node),
    UNIQUE INDEX uq_celers_flow_nodes_task (task_id),
    INDEX idx_celers_flow_nodes_state (state)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS celers_flow_edges (
    workflow_id CHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    parent_node INT      NOT NULL,
    child_node  INT      NOT NULL,
    PRIMARY KEY (workflow_id, child_node, parent_node),
    INDEX idx_celers_flow_edges_parent (workflow_id, parent_node)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
